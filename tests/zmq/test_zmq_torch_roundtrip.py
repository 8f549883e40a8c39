"""Two processes over ZeroMQ: a float tensor batch goes out and comes back byte-exact."""

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


def test_malformed_message_gets_an_error_reply_and_server_keeps_serving(echo_endpoint: str) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.connect(echo_endpoint)
    try:
        sock.send_multipart([b"\xc1 not msgpack"])
        assert sock.poll(10_000)
        err = decode(sock.recv_multipart(copy=False))
        assert err.op is Op.ERROR and err.meta["code"] == "BAD_HEADER"
        x = np.ones((2, 2), np.float32)
        assert np.array_equal(_request(sock, Message(Op.INFER, 1, (x,))).tensors[0], x)
    finally:
        sock.close(0)
        ctx.term()
