"""The driver's endpoint directory (etl/directory.py): executors learn a new rank generation from
the driver over ZeroMQ, never from a file (on a cluster they share no disk with the driver)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from etl.client import ClientSettings, RankClient
from etl.directory import DirectoryClient, DirectoryRef, EndpointDirectory
from framestream import endpoints
from mpi_workers.server_loop import forward
from tests.zmq.test_rank_client import VERSION, Rank, endpoint_set, frames, two_ranks  # noqa: F401

pytestmark = pytest.mark.zmq


def asked(client: DirectoryClient, generation: int, timeout: float = 10.0) -> int | None:
    """Ask until an answer of ``generation`` (or newer) comes; the latest generation seen."""
    deadline, seen = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        got = client.latest()
        if got is not None:
            seen = got.generation
            if seen >= generation:
                return seen
        time.sleep(0.05)  # the directory answers on its own thread; bounded by the deadline
    return seen


def test_answers_the_published_set_and_follows_a_relaunch(tmp_path: Path) -> None:
    ep = tmp_path / "endpoints.json"
    with EndpointDirectory(ep) as directory:
        client = DirectoryClient(directory.ref)
        try:
            assert client.latest() is None  # nothing published: an empty answer, no error
            endpoints.publish(ep, endpoints.EndpointSet(1, ()))
            assert asked(client, 1) == 1
            endpoints.publish(ep, endpoints.EndpointSet(2, ()))
            assert asked(client, 2) == 2
            assert directory.answered >= 2 and directory.refused == 0
        finally:
            client.close()


def test_a_wrong_token_gets_nothing(tmp_path: Path) -> None:
    ep = tmp_path / "endpoints.json"
    endpoints.publish(ep, endpoints.EndpointSet(3, ()))
    with EndpointDirectory(ep) as directory:
        stranger = DirectoryClient(DirectoryRef(directory.ref.address, "0" * 32))
        try:
            deadline = time.monotonic() + 10
            while directory.refused == 0 and time.monotonic() < deadline:
                assert stranger.latest() is None
                time.sleep(0.05)  # bounded poll of the directory's counter
            assert directory.refused >= 1 and directory.answered == 0
            assert stranger.latest() is None
        finally:
            stranger.close()
    assert "0" * 32 not in repr(directory.ref) and directory.ref.token not in repr(directory.ref)


def test_garbage_and_oversized_requests_do_not_stop_it(tmp_path: Path) -> None:
    ep = tmp_path / "endpoints.json"
    endpoints.publish(ep, endpoints.EndpointSet(4, ()))
    with EndpointDirectory(ep) as directory:
        ctx = zmq.Context.instance()
        rude = ctx.socket(zmq.DEALER)
        rude.setsockopt(zmq.LINGER, 0)
        rude.connect(directory.ref.address)
        rude.send_multipart([b"not", b"our", b"wire", b"at all"])
        rude.send(b"x" * 10_000)  # over the request cap: the connection is dropped
        rude.close(0)
        client = DirectoryClient(directory.ref)
        try:
            assert asked(client, 4) == 4
        finally:
            client.close()


def test_an_unreachable_directory_never_blocks_the_client() -> None:
    with zmq.Context.instance().socket(zmq.ROUTER) as probe:  # a port nobody serves after this
        port = probe.bind_to_random_port("tcp://127.0.0.1")
    client = DirectoryClient(DirectoryRef(f"tcp://127.0.0.1:{port}", "t"))
    try:
        started = time.monotonic()
        for _ in range(100):
            assert client.latest() is None
        assert time.monotonic() - started < 5.0  # generous: each call is a poll(0)
    finally:
        client.close()


def test_rank_client_moves_to_the_generation_the_directory_names(two_ranks,  # noqa: F811
                                                                 tmp_path: Path) -> None:
    """The executor's client knows generation 1 (dead) and the directory's address only; the
    relaunched ranks (generation 2) are published on the driver's side and found through it."""
    dead = Rank(5)
    old = endpoint_set(1, dead)
    dead.stop()
    ep = tmp_path / "driver-only" / "endpoints.json"
    ep.parent.mkdir()
    endpoints.publish(ep, endpoint_set(2, *two_ranks))
    with EndpointDirectory(ep) as directory:
        client = RankClient(old, ClientSettings(chunk_frames=64, request_timeout_s=0.5),
                            directory=directory.ref)
        try:
            images = frames(256)
            scores, _ = client.infer(images, VERSION)
            assert client.generation == 2
            np.testing.assert_allclose(scores, forward(two_ranks[0].models.get(VERSION), images,
                                                       256), atol=1e-5)
        finally:
            client.close()
        assert directory.answered >= 1
    assert json.loads(ep.read_text())["generation"] == 2
