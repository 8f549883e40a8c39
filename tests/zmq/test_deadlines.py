"""Deadlines as remaining durations (issue 14, item 5): no host's wall clock is compared with
another's, a request re-sent after its deadline is withdrawn at the slow rank, and a task that
gets nothing but EXPIRED fails within the outage bound. Real ZeroMQ, real RankServer loops."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import msgpack
import pytest
import torch
import zmq

import etl.client
from etl.client import ClientSettings, RankClient, RanksUnavailable
from mpi_workers.metrics import RankMetrics
from mpi_workers.model_cache import ModelCache
from framestream.wire import VERSION, Message, Op, decode, encode
from mpi_workers.server_loop import RankServer
from tests.zmq.test_rank_client import VERSION as MODEL, Rank, SilentRank, endpoint_set, frames

pytestmark = pytest.mark.zmq


@contextmanager
def _held_rank(address: str) -> Iterator[tuple[Any, Any, Any, Any, threading.Thread]]:
    """A real RankServer on ``address`` whose loop has not started yet (start the thread once
    the messages to drain together are on its socket), and a DEALER connected to it; stopped
    and closed on the way out."""
    torch.set_num_threads(1)
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.linger = 0
    router.bind(address)
    server = RankServer(router, ModelCache(None, "cpu", default=MODEL), RankMetrics(0), 0, 256,
                        60.0, 1 << 24)
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(address)
    thread = threading.Thread(target=server.run, daemon=True)
    try:
        yield ctx, router, server, sock, thread
    finally:
        server.stop()
        thread.join(10)
        sock.close(0)
        router.close(0)
        ctx.term()


def test_a_request_cancelled_while_queued_is_not_computed() -> None:
    """The rank is held (it has not started its loop) while an INFER, its CANCEL and another INFER
    wait on its socket; inproc delivery puts all three in its first drain."""
    with _held_rank("inproc://held-rank") as (ctx, router, server, sock, thread):
        sock.send_multipart(encode(Message(Op.INFER, "stale", (frames(3),), MODEL, ttl=30.0)))
        sock.send_multipart(encode(Message(Op.CANCEL, "cancel-stale", meta={"request": "stale"})))
        sock.send_multipart(encode(Message(Op.INFER, "fresh", (frames(2),), MODEL, ttl=30.0)))
        thread.start()
        replies = {}
        while len(replies) < 2:
            assert sock.poll(10_000), f"replies so far: {replies}"
            got = decode(sock.recv_multipart())
            replies[got.id] = got
        assert replies["cancel-stale"].op is Op.ACK
        assert replies["cancel-stale"].meta["cancelled"] == 1
        assert replies["fresh"].op is Op.RESULT and replies["fresh"].tensors[0].shape == (2, 10)
        sock.send_multipart(encode(Message(Op.PING, "p")))
        assert sock.poll(10_000)
        pong = decode(sock.recv_multipart())
        assert pong.op is Op.PONG and pong.meta["frames_served"] == 2  # "stale" never computed
        assert not sock.poll(200)  # and never answered: its sender has moved on


def test_a_request_id_sent_twice_while_waiting_is_computed_and_answered_once() -> None:
    """As above, the rank is held while both copies and another request wait on its socket."""
    with _held_rank("inproc://held-rank-dup") as (ctx, router, server, sock, thread):
        for rid, n in (("dup", 3), ("dup", 3), ("other", 2)):
            sock.send_multipart(encode(Message(Op.INFER, rid, (frames(n),), MODEL, ttl=30.0)))
        thread.start()
        replies = []
        for _ in range(2):
            assert sock.poll(10_000), f"replies so far: {replies}"
            replies.append(decode(sock.recv_multipart()))
        assert sorted((m.id, m.op, m.tensors[0].shape) for m in replies) == \
            [("dup", Op.RESULT, (3, 10)), ("other", Op.RESULT, (2, 10))]
        sock.send_multipart(encode(Message(Op.PING, "p")))
        assert sock.poll(10_000)
        pong = decode(sock.recv_multipart())
        assert pong.op is Op.PONG and pong.meta["frames_served"] == 5  # not 8


def test_the_client_cancels_at_the_slow_rank_what_it_resends_elsewhere() -> None:
    torch.set_num_threads(1)
    silent, live = SilentRank(), Rank(1)
    try:
        client = RankClient(endpoint_set(1, silent, live),
                            ClientSettings(chunk_frames=50, request_timeout_s=0.5))
        client.infer(frames(200), MODEL)
        assert client.resent >= 1
        seen: dict[str, list] = {"INFER": [], "CANCEL": []}
        while silent.sock.poll(200):
            _ident, *parts = silent.sock.recv_multipart()
            msg = decode(parts)
            seen[msg.op.value].append(msg)
        assert seen["INFER"] and all(m.ttl == 0.5 for m in seen["INFER"])
        assert {m.meta["request"] for m in seen["CANCEL"]} == {m.id for m in seen["INFER"]}
        client.close()
    finally:
        live.stop()
        silent.stop()


class ExpiringRank:
    """A rank that is too slow for every request: it answers each one EXPIRED."""

    def __init__(self) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.linger = 0
        self.endpoint = f"tcp://127.0.0.1:{self.sock.bind_to_random_port('tcp://127.0.0.1')}"
        self.answered = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.sock.poll(50):
                ident, *parts = self.sock.recv_multipart()
                msg = decode(parts)
                if msg.op is Op.INFER:
                    self.sock.send_multipart([ident, *encode(msg.error("EXPIRED", "too slow"))])
                    self.answered += 1

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(10)
        self.sock.close(0)
        self.ctx.term()


@pytest.mark.timeout(90)
def test_only_expired_answers_fail_the_task_within_the_outage_bound() -> None:
    rank = ExpiringRank()
    try:
        client = RankClient(endpoint_set(1, rank), ClientSettings(request_timeout_s=0.3,
                                                                  outage_timeout_s=2.0),
                            refresh=lambda: None)
        started = time.monotonic()
        with pytest.raises(RanksUnavailable) as err:
            client.infer(frames(4), MODEL)
        assert time.monotonic() - started < 15
        assert "FRAMESTREAM_CLIENT_OUTAGE_TIMEOUT_S" in str(err.value)
        text = str(err.value)
        assert "EXPIRED" in text and "FRAMESTREAM_CLIENT_REQUEST_TIMEOUT_S" in text
        assert rank.answered >= 2
        client.close()
    finally:
        rank.stop()


@pytest.mark.timeout(90)
@pytest.mark.parametrize("skew_s", [-3600.0, 3600.0])
def test_an_executor_whose_wall_clock_is_off_by_an_hour_is_served(monkeypatch, skew_s) -> None:
    """The executor's host clock disagrees with the rank's by far more than the request timeout.
    The skew is simulated for the client module only (the rank in this process keeps the real
    clock), which is exactly two hosts' clocks disagreeing."""
    real = time.time
    monkeypatch.setattr(etl.client, "time", SimpleNamespace(
        time=lambda: real() + skew_s, monotonic=time.monotonic, sleep=time.sleep))
    torch.set_num_threads(1)
    rank = Rank(0)
    try:
        client = RankClient(endpoint_set(1, rank), ClientSettings(chunk_frames=16,
                                                                  request_timeout_s=2.0,
                                                                  outage_timeout_s=10.0))
        scores, version = client.infer(frames(40), MODEL)
        assert scores.shape == (40, 10) and version == MODEL and client.resent == 0
        client.close()
    finally:
        rank.stop()


def _raw(version: int, **header) -> list[bytes]:
    x = frames(2)
    base = {"v": version, "op": "INFER", "id": "r", "model": MODEL,
            "tensors": [{"dtype": "uint8", "shape": list(x.shape)}], "meta": {}}
    return [msgpack.packb({**base, **header}), x.tobytes()]


@pytest.mark.parametrize("header, expect", [
    ({"deadline": 1.0}, "RESULT"),                        # an absolute time is no longer read
    ({"deadline": time.time() + 1e6, "ttl": 0.0}, "EXPIRED"),  # only the duration counts
    ({"ttl": 30.0}, "RESULT"),
])
def test_the_rank_reads_durations_not_the_senders_wall_clock(header: dict, expect: str) -> None:
    torch.set_num_threads(1)
    rank = Rank(0)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(rank.endpoint)
    try:
        sock.send_multipart(_raw(VERSION, **header))
        assert sock.poll(10_000)
        got = decode(sock.recv_multipart())
        assert (got.op.value if got.op is Op.RESULT else got.meta["code"]) == expect
        sock.send_multipart(_raw(1, deadline=time.time() + 60))  # version 1: refused, clearly
        assert sock.poll(10_000)
        assert decode(sock.recv_multipart()).meta["code"] == "BAD_VERSION"
    finally:
        sock.close(0)
        ctx.term()
        rank.stop()
