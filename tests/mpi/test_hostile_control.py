"""Real ranks under mpirun against a stranger on their socket (issue 14, item 1).

A 100-byte INFER whose spec is ``uint8 [0, 2**39, 2**39]`` with an empty buffer used to raise in
``protocol.decode`` and MPI_Abort the whole gang; SHUTDOWN and END were obeyed from anyone. Now
both ranks answer ERROR, keep serving, and take control ops only with the gang's token, which
the code that starts mpirun puts in the ranks' environment alone.
"""

from __future__ import annotations

from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq

from etl.feed import end_feed
from framestream.paths import REPO
from launcher.mpirun import MpiJob, start_ranks
from framestream import endpoints
from framestream.wire import (CONTROL_TOKEN_ENV, VERSION, Message, Op, decode, encode,
                                  new_control_token)

pytestmark = [pytest.mark.mpi, pytest.mark.slow]
MODEL = "random-fashion_cnn"
HUGE = [0, 2**39, 2**39]


def crafted(op: str, specs: list[dict]) -> list[bytes]:
    header = {"v": VERSION, "op": op, "id": "evil", "tensors": specs, "model": None, "ttl": None,
              "meta": {}}
    return [msgpack.packb(header), *[b""] * len(specs)]


class Stranger:
    """A process-local peer with one DEALER per rank: what any local user can open."""

    def __init__(self, published: endpoints.EndpointSet) -> None:
        self.ctx = zmq.Context()
        self.socks = []
        for r in published.ranks:
            s = self.ctx.socket(zmq.DEALER)
            s.linger = 0
            s.connect(r.endpoint)
            self.socks.append(s)

    def ask_all(self, parts: list) -> list[Message]:
        out = []
        for s in self.socks:
            s.send_multipart(parts)
            assert s.poll(20_000), "a rank stopped answering"
            out.append(decode(s.recv_multipart()))
        return out

    def close(self) -> None:
        self.ctx.destroy(linger=0)


def start(tmp_path: Path, module: str, args: list[str], token: str) -> MpiJob:
    return start_ranks(module, args, n=2, env={CONTROL_TOKEN_ENV: token},
                       output=tmp_path / "ranks.log", run_dir=tmp_path / "run", cwd=REPO)


def test_crafted_specs_and_a_strangers_shutdown_leave_the_serving_gang_up(tmp_path: Path) -> None:
    token = new_control_token()
    ep = tmp_path / "ep.json"
    proc = start(tmp_path, "mpi_workers.serve", ["--version", MODEL, "--threads", "1",
                                                 "--endpoints-file", str(ep)], token)
    stranger = None
    try:
        published = endpoints.wait_for(ep, 120)
        stranger = Stranger(published)
        for dtype in ("uint8", "float32", "bool"):
            for err in stranger.ask_all(crafted("INFER", [{"dtype": dtype, "shape": HUGE}])):
                assert err.op is Op.ERROR and err.meta["code"] == "BAD_SHAPE", err
        for bad in (Message(Op.SHUTDOWN, "s"), Message(Op.SHUTDOWN, "s", meta={"token": "x"})):
            for err in stranger.ask_all(encode(bad)):
                assert err.op is Op.ERROR and err.meta["code"] == "FORBIDDEN"
        pongs = stranger.ask_all(encode(Message(Op.PING, "alive")))
        assert sorted(p.meta["rank"] for p in pongs) == [0, 1] and proc.poll() is None
        x = np.zeros((2, 28, 28, 1), np.uint8)
        for res in stranger.ask_all(encode(Message(Op.INFER, "ok", (x,), MODEL, ttl=30.0))):
            assert res.op is Op.RESULT and res.tensors[0].shape == (2, 10)
        for ack in stranger.ask_all(encode(Message(Op.SHUTDOWN, "bye", meta={"token": token}))):
            assert ack.op is Op.ACK  # the launcher's token still stops them
        assert proc.wait(60) == 0
    finally:
        if stranger is not None:
            stranger.close()
        proc.stop()
    log = (tmp_path / "ranks.log").read_text(errors="replace")
    assert token not in log


def test_training_ranks_refuse_crafted_train_and_a_strangers_end(tmp_path: Path) -> None:
    token = new_control_token()
    ep = tmp_path / "feed.json"
    proc = start(tmp_path, "jobs.retrain", [
        "--source", "zmq", "--feed-endpoints", str(ep), "--feed-timeout", "120", "--epochs", "1",
        "--threads", "1", "--registry", str(tmp_path / "reg"), "--holdout-limit", "200",
        "--checkpoint-dir", str(tmp_path / "ckpt"), "--no-promote", "--no-progress"], token)
    stranger = None
    try:
        published = endpoints.wait_for(ep, 120)
        stranger = Stranger(published)
        for dtype in ("uint8", "int64"):
            specs = [{"dtype": dtype, "shape": HUGE}, {"dtype": "int64", "shape": [0]}]
            for err in stranger.ask_all(crafted("TRAIN", specs)):
                assert err.op is Op.ERROR and err.meta["code"] == "BAD_SHAPE", err
        for err in stranger.ask_all(encode(Message(Op.END, "e", meta={"token": "guess"}))):
            assert err.op is Op.ERROR and err.meta["code"] == "FORBIDDEN"
        rng = np.random.default_rng(0)
        x = rng.integers(0, 256, (32, 28, 28, 1), dtype=np.uint8)
        y = rng.integers(0, 10, 32).astype(np.int64)
        for ack in stranger.ask_all(encode(Message(Op.TRAIN, "t", (x, y)))):
            assert ack.op is Op.ACK and ack.meta["frames"] == 32
        with pytest.raises(RuntimeError, match="FORBIDDEN"):
            end_feed(published, timeout_s=20)  # the driver's END without the token: refused too
        assert proc.poll() is None
        assert end_feed(published, timeout_s=20, control_token=token) == [32, 32]
        assert proc.wait(300) == 0
    finally:
        if stranger is not None:
            stranger.close()
        proc.stop()
    assert token not in (tmp_path / "ranks.log").read_text(errors="replace")
