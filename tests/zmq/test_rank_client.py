"""The data plane in one process: real ZeroMQ sockets, real RankServer loops in threads, the
executor-side RankClient. Covers spreading, credits, deadlines and re-sends, new generations."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
import torch
import zmq

from etl.client import ClientSettings, RankClient, RankError, RanksUnavailable
from framestream.endpoints import EndpointSet, RankEndpoint
from mpi_workers.metrics import RankMetrics
from mpi_workers.model_cache import ModelCache
from framestream.wire import Message, Op, decode, encode
from mpi_workers.server_loop import RankServer, forward

pytestmark = pytest.mark.zmq
VERSION = "random-fashion_cnn"


class Rank:
    """A serving rank on a thread: the real loop on a real ROUTER socket."""

    def __init__(self, rank: int, max_batch: int = 256) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.endpoint = f"tcp://127.0.0.1:{self.sock.bind_to_random_port('tcp://127.0.0.1')}"
        self.models = ModelCache(None, "cpu", default=VERSION)
        self.server = RankServer(self.sock, self.models, RankMetrics(rank), rank, max_batch, 60.0,
                                 1 << 28)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.stop()
        self.thread.join(10)
        self.sock.close(0)
        self.ctx.term()


class SilentRank:
    """Accepts connections and requests, never answers (a hung or SIGSTOPped rank)."""

    def __init__(self) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.endpoint = f"tcp://127.0.0.1:{self.sock.bind_to_random_port('tcp://127.0.0.1')}"

    def stop(self) -> None:
        self.sock.close(0)
        self.ctx.term()


def endpoint_set(generation: int, *ranks) -> EndpointSet:
    return EndpointSet(generation, tuple(RankEndpoint(i, r.endpoint, "test", 0)
                                         for i, r in enumerate(ranks)), VERSION)


@pytest.fixture
def two_ranks() -> Iterator[list[Rank]]:
    torch.set_num_threads(1)
    ranks = [Rank(0), Rank(1)]
    yield ranks
    for r in ranks:
        r.stop()


def frames(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 28, 28, 1), dtype=np.uint8)


def test_scores_equal_the_model_run_locally_and_load_spreads(two_ranks) -> None:
    client = RankClient(endpoint_set(1, *two_ranks), ClientSettings(chunk_frames=100))
    images = frames(1000)
    scores, version = client.infer(images, VERSION)
    local = forward(two_ranks[0].models.get(VERSION), images, 1000)
    assert version == VERSION and scores.shape == (1000, 10)
    np.testing.assert_allclose(scores, local, atol=1e-5)
    assert all(r.server.frames_served > 0 for r in two_ranks)
    assert sum(r.server.frames_served for r in two_ranks) == 1000
    client.close()


def test_light_load_still_spreads_over_the_ranks(two_ranks) -> None:
    client = RankClient(endpoint_set(1, *two_ranks), ClientSettings(chunk_frames=10))
    deadline = time.monotonic() + 30  # until both connections are up, every rank has answered
    while not all(r.server.frames_served for r in two_ranks):
        assert time.monotonic() < deadline, "a rank never answered"
        client.infer(frames(10), VERSION)
    before = [r.server.frames_served for r in two_ranks]
    for i in range(6):  # one request at a time: every rank is idle at each choice
        client.infer(frames(10, seed=i), VERSION)
    assert [r.server.frames_served - b for r, b in zip(two_ranks, before)] == [30, 30]
    client.close()


def test_credits_bound_requests_in_flight_per_rank(two_ranks) -> None:
    """Over real sockets the pump keeps exactly to the dispatcher's window: with one credit a
    rank never holds two requests, and both ranks are used (the window itself is tested exactly,
    transition by transition, in tests/unit/test_dispatch.py)."""
    client = RankClient(endpoint_set(1, *two_ranks), ClientSettings(chunk_frames=10,
                                                                    credits_per_rank=1))
    scores, _ = client.infer(frames(500), VERSION)
    assert scores.shape == (500, 10)
    assert client.dispatcher.peak_in_flight == 1 and client.pending() == 0
    assert all(r.server.frames_served > 0 for r in two_ranks)
    client.close()


def test_request_to_a_silent_rank_is_resent_to_a_live_one(two_ranks) -> None:
    silent = SilentRank()
    try:
        client = RankClient(endpoint_set(1, silent, two_ranks[0]),
                            ClientSettings(chunk_frames=50, request_timeout_s=0.5))
        images = frames(400)
        scores, _ = client.infer(images, VERSION)
        np.testing.assert_allclose(scores, forward(two_ranks[0].models.get(VERSION), images, 400),
                                   atol=1e-5)
        assert client.resent >= 1
        assert two_ranks[0].server.frames_served == 400
        client.close()
    finally:
        silent.stop()


def test_moves_to_a_newer_generation_when_the_old_ranks_are_gone(two_ranks) -> None:
    dead = Rank(5)
    old = endpoint_set(1, dead)
    dead.stop()
    newer = endpoint_set(2, *two_ranks)
    client = RankClient(old, ClientSettings(chunk_frames=64, request_timeout_s=0.5),
                        refresh=lambda: newer)
    scores, _ = client.infer(frames(256), VERSION)
    assert scores.shape == (256, 10) and client.generation == 2
    client.close()


def test_no_rank_and_no_new_generation_fails_within_the_outage_budget() -> None:
    dead = Rank(0)
    gone = endpoint_set(1, dead)
    dead.stop()
    client = RankClient(gone, ClientSettings(request_timeout_s=0.2, outage_timeout_s=1.0),
                        refresh=lambda: gone)
    started = time.monotonic()
    with pytest.raises(RanksUnavailable, match="FRAMESTREAM_CLIENT_OUTAGE_TIMEOUT_S"):
        client.infer(frames(10), VERSION)
    assert time.monotonic() - started < 10
    client.close()


def test_wrong_shape_is_refused_with_a_clear_error(two_ranks) -> None:
    client = RankClient(endpoint_set(1, *two_ranks))
    with pytest.raises(RankError, match="BAD_SHAPE"):
        client.infer(np.zeros((4, 32, 32, 3), np.uint8), VERSION)
    client.close()


def test_malformed_and_control_messages(two_ranks) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(two_ranks[0].endpoint)
    try:
        for junk in ([b"\x00garbage"], [b"\x81\xa1v\x02"], [encode(Message(Op.INFER, 1))[0], b"x"]):
            sock.send_multipart(junk)
            assert sock.poll(5000)
            assert decode(sock.recv_multipart()).op is Op.ERROR
        sock.send_multipart(encode(Message(Op.PING, "p")))
        assert sock.poll(5000)
        pong = decode(sock.recv_multipart())
        assert pong.op is Op.PONG and pong.model == VERSION and pong.meta["rank"] == 0
        sock.send_multipart(encode(Message(Op.INFER, "late", (frames(2),), VERSION, ttl=0.0)))
        assert sock.poll(5000)
        assert decode(sock.recv_multipart()).meta["code"] == "EXPIRED"
        sock.send_multipart(encode(Message(Op.INFER, "ok", (frames(3),), VERSION)))
        assert sock.poll(5000)
        assert decode(sock.recv_multipart()).tensors[0].shape == (3, 10)  # still serving
    finally:
        sock.close(0)
        ctx.term()
