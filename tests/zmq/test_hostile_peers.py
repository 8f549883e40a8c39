"""A peer that can reach a rank's socket but is not its launcher: whatever it sends is answered
ERROR and counted, the rank keeps serving, and no control op of its own is obeyed. Real ZeroMQ
sockets, the real RankServer and FeedReceiver loops in threads."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import msgpack
import numpy as np
import pytest
import torch
import zmq

from models.spec import PreprocessSpec
from mpi_workers.feed import FeedReceiver
from framestream.wire import VERSION, Message, Op, decode, encode, new_control_token
from tests.zmq.test_rank_client import VERSION as MODEL, Rank, frames

pytestmark = pytest.mark.zmq


def crafted(op: str, specs: list[dict], buffers: list[bytes], **meta) -> list[bytes]:
    header = {"v": VERSION, "op": op, "id": "evil", "tensors": specs, "model": None, "ttl": None,
              "meta": meta}
    return [msgpack.packb(header), *buffers]


HUGE = [0, 2**39, 2**39]  # 0 bytes, but numpy cannot index it (issue 14's 100-byte message)


def ask(sock: zmq.Socket, parts: list, timeout_ms: int = 10_000) -> Message:
    sock.send_multipart(parts)
    assert sock.poll(timeout_ms), "no reply: the rank stopped answering"
    return decode(sock.recv_multipart())


class Stranger:
    """Any local process: it can open DEALER sockets to a rank, and has no token."""

    def __init__(self) -> None:
        self.ctx = zmq.Context()
        self.socks: list[zmq.Socket] = []

    def close(self) -> None:
        for s in self.socks:
            s.close(0)
        self.ctx.term()


@pytest.fixture
def stranger() -> Iterator[Stranger]:
    s = Stranger()
    yield s
    s.close()


def dealer(who: Stranger, endpoint: str) -> zmq.Socket:
    sock = who.ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    who.socks.append(sock)
    return sock


def test_crafted_specs_and_shutdown_from_a_stranger_leave_the_rank_serving(stranger) -> None:
    torch.set_num_threads(1)
    token = new_control_token()
    rank = Rank(0)
    rank.server.control_token = token
    try:
        sock = dealer(stranger, rank.endpoint)
        for dtype in ("uint8", "float64", "bool", "int64"):
            err = ask(sock, crafted("INFER", [{"dtype": dtype, "shape": HUGE}], [b""]))
            assert err.op is Op.ERROR and err.meta["code"] == "BAD_SHAPE", err
        for bad in (Message(Op.SHUTDOWN, "s1"), Message(Op.SHUTDOWN, "s2", meta={"token": "x"}),
                    Message(Op.SHUTDOWN, "s3", meta={"token": token[:-1]})):
            err = ask(sock, encode(bad))
            assert err.op is Op.ERROR and err.meta["code"] == "FORBIDDEN" and err.id == bad.id
        assert rank.thread.is_alive()
        result = ask(sock, encode(Message(Op.INFER, "ok", (frames(3),), MODEL, ttl=30.0)))
        assert result.op is Op.RESULT and result.tensors[0].shape == (3, 10)
        refused = rank.server.metrics.refused
        assert refused.labels(rank="0", code="FORBIDDEN")._value.get() == 3
        assert refused.labels(rank="0", code="BAD_SHAPE")._value.get() == 4
        bye = ask(sock, encode(Message(Op.SHUTDOWN, "s4", meta={"token": token})))
        assert bye.op is Op.ACK  # the launcher's own SHUTDOWN still works
        rank.thread.join(10)
        assert not rank.thread.is_alive()
    finally:
        rank.stop()


def test_a_rank_without_a_control_token_takes_no_shutdown(stranger) -> None:
    rank = Rank(0)  # started with no FRAMESTREAM_CONTROL_TOKEN: only a signal stops it
    try:
        sock = dealer(stranger, rank.endpoint)
        err = ask(sock, encode(Message(Op.SHUTDOWN, "s", meta={"token": ""})))
        assert err.meta["code"] == "FORBIDDEN"
        assert ask(sock, encode(Message(Op.PING, "p"))).op is Op.PONG
    finally:
        rank.stop()


class _Broken:
    """Stands in for the model cache and fails on every use: a bug met while handling a PING."""

    def __getattr__(self, name: str):
        raise RuntimeError(f"a bug reading {name}")


def test_a_bug_while_handling_one_message_is_an_error_reply_not_a_dead_rank(stranger) -> None:
    rank = Rank(0)
    try:
        sock = dealer(stranger, rank.endpoint)
        models, rank.server.models = rank.server.models, _Broken()
        err = ask(sock, encode(Message(Op.PING, "p1")))
        assert err.op is Op.ERROR and err.meta["code"] == "INTERNAL" and err.id == "p1"
        rank.server.models = models
        assert ask(sock, encode(Message(Op.PING, "p2"))).op is Op.PONG
        assert rank.server.metrics.refused.labels(rank="0", code="INTERNAL")._value.get() == 1
    finally:
        rank.stop()


class Feed:
    """A training rank's receiver on a thread: the real FeedReceiver on a real ROUTER."""

    def __init__(self, token: str | None) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.endpoint = f"tcp://127.0.0.1:{self.sock.bind_to_random_port('tcp://127.0.0.1')}"
        self.receiver = FeedReceiver(self.sock, PreprocessSpec(), 0, 1000, 1 << 20,
                                     control_token=token)
        self.out: list = []
        self.thread = threading.Thread(target=lambda: self.out.append(self.receiver.run(60)),
                                       daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.receiver.ended = True
        self.thread.join(10)
        self.sock.close(0)
        self.ctx.term()


def test_training_feed_refuses_crafted_train_and_a_strangers_end(stranger) -> None:
    token = new_control_token()
    feed = Feed(token)
    try:
        sock = dealer(stranger, feed.endpoint)
        for dtype in ("uint8", "int64", "float16"):
            err = ask(sock, crafted("TRAIN", [{"dtype": dtype, "shape": HUGE},
                                              {"dtype": "int64", "shape": [0]}], [b"", b""]))
            assert err.op is Op.ERROR and err.meta["code"] == "BAD_SHAPE"
        for bad in (Message(Op.END, "e1"), Message(Op.END, "e2", meta={"token": "guess"})):
            err = ask(sock, encode(bad))
            assert err.op is Op.ERROR and err.meta["code"] == "FORBIDDEN"
        assert feed.thread.is_alive() and not feed.receiver.ended
        x = frames(4)
        ack = ask(sock, encode(Message(Op.TRAIN, "t", (x, np.arange(4, dtype=np.int64)))))
        assert ack.op is Op.ACK and ack.meta["frames"] == 4
        done = ask(sock, encode(Message(Op.END, "end", meta={"token": token})))
        assert done.op is Op.ACK
        feed.thread.join(10)
        images, labels = feed.out[0]
        assert images.shape == (4, 28, 28, 1) and list(labels) == [0, 1, 2, 3]
        assert feed.receiver.refused == {"BAD_SHAPE": 3, "FORBIDDEN": 2}
    finally:
        feed.stop()
