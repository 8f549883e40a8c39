"""The training side of the feed: a TRAIN the sender re-sends (its ACK was late) is ACKed again
and not kept twice. Real ZeroMQ, the real FeedReceiver loop on a thread."""

from __future__ import annotations

import numpy as np
import pytest
import zmq

from framestream.wire import Message, Op, encode, new_control_token
from tests.zmq.test_hostile_peers import Feed, ask

pytestmark = pytest.mark.zmq


def train(rid: str, n: int, label: int) -> Message:
    x = np.full((n, 28, 28, 1), label, np.uint8)
    return Message(Op.TRAIN, rid, (x, np.full(n, label, np.int64)))


def test_a_resent_train_is_acked_again_and_kept_once() -> None:
    token = new_control_token()
    feed = Feed(token)
    ctx = zmq.Context()
    socks = [ctx.socket(zmq.DEALER) for _ in range(2)]
    try:
        for s in socks:
            s.setsockopt(zmq.LINGER, 0)
            s.connect(feed.endpoint)
        a, b = socks
        acks = [ask(a, encode(train("t1", 3, 1))), ask(a, encode(train("t1", 3, 1))),
                ask(b, encode(train("t1", 2, 2))),   # another sender's t1 is its own
                ask(a, encode(train("t2", 0, 0))), ask(a, encode(train("t2", 0, 0)))]
        assert [(m.op, m.id, m.meta["frames"]) for m in acks] == [
            (Op.ACK, "t1", 3), (Op.ACK, "t1", 3), (Op.ACK, "t1", 5), (Op.ACK, "t2", 5),
            (Op.ACK, "t2", 5)]
        assert feed.receiver.duplicates == 1
        end = ask(a, encode(Message(Op.END, "end", meta={"token": token})))
        assert end.op is Op.ACK and end.meta["frames"] == 5
        feed.thread.join(10)
        images, labels = feed.out[0]
        assert images.shape == (5, 28, 28, 1) and labels.tolist() == [1, 1, 1, 2, 2]
    finally:
        for s in socks:
            s.close(0)
        ctx.term()
        feed.stop()
