"""Two processes over ZeroMQ: a float tensor batch goes out and comes back byte-exact, and the
real serving loop of a rank answers every message it cannot use with an ERROR and keeps serving."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import zmq

from framestream.paths import REPO
from framestream.wire import Message, Op, decode, encode

pytestmark = pytest.mark.zmq


@pytest.fixture
def echo_endpoint():
    with subprocess.Popen([sys.executable, "-m", "tests.helpers.zmq_echo"], cwd=REPO,
                          stdout=subprocess.PIPE, text=True) as proc:
        try:
            endpoint = proc.stdout.readline().strip()
            assert endpoint.startswith("tcp://127.0.0.1:"), endpoint
            yield endpoint
        finally:
            proc.kill()
            proc.wait(10)


def _request(sock: zmq.Socket, msg: Message) -> Message:
    sock.send_multipart(encode(msg), copy=False)
    assert sock.poll(10_000), "no reply within 10 s"
    return decode(sock.recv_multipart(copy=False))


def test_float_batch_round_trip_is_byte_exact(echo_endpoint: str) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.connect(echo_endpoint)
    try:
        gen = torch.Generator().manual_seed(0)
        batch = torch.randn(64, 3, 32, 32, generator=gen)
        batch[0, 0, 0, :4] = torch.tensor([float("nan"), float("inf"), -0.0, 1e-45])
        labels = torch.arange(64, dtype=torch.int64)
        reply = _request(sock, Message(Op.INFER, 42, (batch.numpy(), labels.numpy()), model="v1"))
        assert reply.op is Op.RESULT and reply.id == 42
        back = torch.from_numpy(reply.tensors[0].copy())
        assert back.dtype == torch.float32 and back.shape == batch.shape
        assert back.numpy().tobytes() == batch.numpy().tobytes()  # NaN, inf, -0.0 included
        assert np.array_equal(reply.tensors[1], labels.numpy())

        bye = _request(sock, Message(Op.SHUTDOWN, 43))
        assert bye.op is Op.ACK and bye.id == 43
    finally:
        sock.close(0)
        ctx.term()


@pytest.fixture
def rank_endpoint():
    """The real serving loop (:class:`mpi_workers.server_loop.RankServer`) in a process of its
    own."""
    with subprocess.Popen([sys.executable, "-m", "tests.helpers.rank_server"], cwd=REPO,
                          stdout=subprocess.PIPE, text=True) as proc:
        try:
            endpoint = proc.stdout.readline().strip()
            assert endpoint.startswith("tcp://127.0.0.1:"), endpoint
            yield proc, endpoint
        finally:
            proc.kill()
            proc.wait(10)


def test_malformed_messages_get_error_replies_and_the_rank_keeps_serving(rank_endpoint) -> None:
    from tests.helpers.rank_server import MODEL

    proc, endpoint = rank_endpoint
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    try:
        x = np.random.default_rng(0).integers(0, 256, (3, 28, 28, 1), dtype=np.uint8)
        before = _request(sock, Message(Op.INFER, "before", (x,), MODEL))
        assert before.op is Op.RESULT and before.tensors[0].shape == (3, 10)
        junk = [([b"\xc1 not msgpack"], "BAD_HEADER"),
                ([encode(Message(Op.INFER, 1))[0], b"x"], "FRAME_COUNT"),
                (encode(Message(Op.INFER, 2, (np.zeros((2, 5), np.float32),), MODEL)),
                 "BAD_SHAPE"),
                (encode(Message(Op.TRAIN, 3, (x, np.zeros(3, np.int64)))), "BAD_OP"),
                (encode(Message(Op.SHUTDOWN, 4)), "FORBIDDEN"),  # no control token: no stop
                (encode(Message(Op.INFER, 5, (x,), "no-such-version")), "MODEL_UNAVAILABLE")]
        for frames, code in junk:
            sock.send_multipart(frames)
            assert sock.poll(10_000), f"no reply to {code} within 10 s"
            err = decode(sock.recv_multipart(copy=False))
            assert err.op is Op.ERROR and err.meta["code"] == code, err.meta
        after = _request(sock, Message(Op.INFER, "after", (x,), MODEL))
        assert after.op is Op.RESULT and after.model == MODEL
        np.testing.assert_array_equal(after.tensors[0], before.tensors[0])  # same rank, same model
        pong = _request(sock, Message(Op.PING, "p"))
        assert pong.meta["frames_served"] == 6 and proc.poll() is None  # still up, served both
    finally:
        sock.close(0)
        ctx.term()
