"""CURVE on the data plane: real sockets, the real serving loop (in a thread) behind
``bind_router`` with keys made by ``python -m framestream.keys``. Allowed clients get answers;
unknown keys, plain clients, a wrong server key, garbage and oversized messages are refused and
counted, and the rank keeps serving through all of it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import zmq

from etl.client import ClientSettings, RankClient, RanksUnavailable
from framestream import keys as keys_cli
from framestream.errors import ConfigError
from framestream.paths import REPO
from framestream.security import InsecureBind, server_keys
from framestream.endpoints import EndpointSet, RankEndpoint
from mpi_workers.metrics import RankMetrics
from mpi_workers.model_cache import ModelCache
from framestream.wire import Message, Op, decode, encode
from mpi_workers.rank_socket import bind_router
from mpi_workers.serve import peer_counter
from mpi_workers.server_loop import RankServer

pytestmark = pytest.mark.zmq
VERSION = "random-fashion_cnn"


class CurveRank:
    """A serving rank on a thread, bound the way serve.py binds: policy, keys, guard."""

    def __init__(self, key_dir: Path | None, bind: str = "127.0.0.1", insecure: bool = False,
                 max_bytes: int = 1 << 24, reload_s: float = 5.0) -> None:
        secret = str(key_dir / "server.key_secret") if key_dir else ""
        clients = str(key_dir / "clients") if key_dir else ""
        keys = server_keys(bind, secret, clients, insecure)
        self.metrics = RankMetrics(0)
        self.ctx = zmq.Context()
        self.bound = bind_router(self.ctx, bind, 0, 0, max_bytes, keys, insecure,
                                 peer_counter(self.metrics.registry))
        self.port = int(self.bound.endpoint.rsplit(":", 1)[1])
        self.endpoint = f"tcp://127.0.0.1:{self.port}"
        self.server = RankServer(self.bound.sock, ModelCache(None, "cpu", default=VERSION),
                                 self.metrics, 0, 256, 60.0, max_bytes, guard=self.bound.guard)
        self.guard = self.bound.guard
        self.guard.RELOAD_S = reload_s
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.stop()
        self.thread.join(10)
        self.bound.close()
        self.ctx.term()

    def scraped(self, event: str) -> float:
        from prometheus_client import generate_latest

        text = generate_latest(self.metrics.registry).decode()
        for line in text.splitlines():
            if line.startswith("framestream_rank_peers_total") and f'event="{event}"' in line:
                return float(line.rsplit(" ", 1)[1])
        return 0.0


def eps(rank: CurveRank) -> EndpointSet:
    return EndpointSet(1, (RankEndpoint(0, rank.endpoint, "test", 0),), VERSION)


def wait_for(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)  # the rank's thread updates its counters between polls


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("keys")
    assert keys_cli.main(["init", str(d), "--client", "executors", "--client", "ops"]) == 0
    keys_cli.add_client(d, "stranger")
    keys_cli.revoke(d, "stranger")  # a key pair that exists but is not allowed
    return d


@pytest.fixture
def rank(key_dir: Path) -> Iterator[CurveRank]:
    torch.set_num_threads(1)
    r = CurveRank(key_dir)
    yield r
    r.stop()


def settings(key_dir: Path, name: str = "executors", server: str = "server.key",
             **kw: float) -> ClientSettings:
    return ClientSettings(curve_secret=str(key_dir / f"{name}.key_secret"),
                          curve_server_key=str(key_dir / server), **kw)


def images(n: int) -> np.ndarray:
    return np.random.default_rng(n).integers(0, 256, (n, 28, 28, 1), dtype=np.uint8)


def test_allowed_client_is_answered_over_curve(rank: CurveRank, key_dir: Path) -> None:
    client = RankClient(eps(rank), settings(key_dir))
    scores, version = client.infer(images(64), VERSION)
    assert scores.shape == (64, 10) and version == VERSION
    client.close()
    wait_for(lambda: rank.guard.counts["handshake_ok"] >= 1)
    assert rank.guard.rejected == 0 and rank.guard.curve


@pytest.mark.parametrize("who, server_key, event", [
    ("stranger", "server.key", "unauthorized"),       # a real key, not in the allowed folder
    ("executors", "ops.key_secret", "bad_handshake"),  # pins the wrong server key
    (None, None, "bad_handshake"),                     # plain ZeroMQ against a CURVE rank
])
def test_refused_clients_get_nothing_and_are_counted(rank: CurveRank, key_dir: Path, who: str,
                                                     server_key: str, event: str) -> None:
    s = (settings(key_dir, who, server_key, request_timeout_s=0.3, outage_timeout_s=1.5) if who
         else ClientSettings(request_timeout_s=0.3, outage_timeout_s=1.5))
    client = RankClient(eps(rank), s, refresh=lambda: eps(rank))
    try:
        with pytest.raises(RanksUnavailable):
            client.infer(images(8), VERSION)
    finally:
        client.close()
    wait_for(lambda: rank.guard.counts[event] >= 1)
    assert rank.server.frames_served == 0
    assert rank.scraped(event) >= 1  # Prometheus: framestream_rank_peers_total{event=...}
    good = RankClient(eps(rank), settings(key_dir))  # the rank still serves allowed clients
    assert good.infer(images(4), VERSION)[0].shape == (4, 10)
    good.close()


def test_garbage_and_oversized_messages_never_crash_the_rank(key_dir: Path) -> None:
    r = CurveRank(key_dir, max_bytes=64 * 1024)
    try:
        for _ in range(3):  # port scans and garbage: refused in or before the handshake
            with socket.create_connection(("127.0.0.1", r.port), timeout=5) as s:
                s.sendall(os.urandom(512))
        wait_for(lambda: r.guard.rejected >= 3)
        client = RankClient(eps(r), settings(key_dir, request_timeout_s=1.0, outage_timeout_s=3),
                            refresh=lambda: eps(r))
        try:
            with pytest.raises(RanksUnavailable):  # 100 frames of 784 B > 64 KiB: peer dropped
                client.infer(images(100), VERSION)
        finally:
            client.close()
        ctx = zmq.Context()  # an allowed peer sending malformed messages gets ERROR replies
        sock = ctx.socket(zmq.DEALER)
        sock.linger = 0
        keys = settings(key_dir).keys()
        sock.curve_secretkey, sock.curve_publickey, sock.curve_serverkey = \
            keys.secret, keys.public, keys.server
        sock.connect(r.endpoint)
        for junk in ([b"\xc1"], [b"\x81\xa1v\x07"], [encode(Message(Op.INFER, 1))[0], b"xx"]):
            sock.send_multipart(junk)
            assert sock.poll(5000)
            assert decode(sock.recv_multipart()).op is Op.ERROR
        sock.close(0)
        ctx.term()
        good = RankClient(eps(r), settings(key_dir))
        assert good.infer(images(8), VERSION)[0].shape == (8, 10)
        good.close()
        assert r.thread.is_alive()
    finally:
        r.stop()


def test_revoked_client_is_refused_without_a_restart(key_dir: Path, tmp_path: Path) -> None:
    import shutil

    d = tmp_path / "keys"
    shutil.copytree(key_dir, d)
    r = CurveRank(d, reload_s=0.2)
    try:
        first = RankClient(eps(r), settings(d, "ops"))
        assert first.infer(images(4), VERSION)[0].shape == (4, 10)
        first.close()
        reloads = r.guard.reloads
        time.sleep(0.05)  # a directory mtime that surely differs from the one loaded
        keys_cli.revoke(d, "ops")
        wait_for(lambda: r.guard.reloads > reloads)
        again = RankClient(eps(r), settings(d, "ops", request_timeout_s=0.3, outage_timeout_s=1.5),
                           refresh=lambda: eps(r))
        try:
            with pytest.raises(RanksUnavailable):
                again.infer(images(4), VERSION)
        finally:
            again.close()
        wait_for(lambda: r.guard.counts["unauthorized"] >= 1)
    finally:
        r.stop()


def test_revocation_reaches_a_connection_that_is_already_open(key_dir: Path,
                                                              tmp_path: Path) -> None:
    """ZAP checks a key only at the handshake: a client connected before its key was revoked
    keeps its connection, but from the reload on every message on it is refused (REVOKED)."""
    import shutil

    from etl.client import RankError

    d = tmp_path / "keys"
    shutil.copytree(key_dir, d)
    r = CurveRank(d, reload_s=0.2)
    try:
        open_client = RankClient(eps(r), settings(d, "ops", request_timeout_s=5))
        other = RankClient(eps(r), settings(d, "executors"))
        try:
            assert open_client.infer(images(4), VERSION)[0].shape == (4, 10)
            assert other.infer(images(4), VERSION)[0].shape == (4, 10)
            reloads, handshakes = r.guard.reloads, r.guard.counts["handshake_ok"]
            keys_cli.revoke(d, "ops")
            st = (d / "clients").stat()  # an mtime surely other than the one the rank loaded
            os.utime(d / "clients", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
            wait_for(lambda: r.guard.reloads > reloads)
            with pytest.raises(RankError, match="REVOKED"):
                open_client.infer(images(4), VERSION)
            assert r.guard.counts["revoked"] >= 1 and r.scraped("revoked") >= 1
            assert r.guard.counts["handshake_ok"] == handshakes  # the same, open connection
            # a key still allowed is served on, over its own open connection
            assert other.infer(images(4), VERSION)[0].shape == (4, 10)
        finally:
            open_client.close()
            other.close()
        assert r.thread.is_alive()
    finally:
        r.stop()


def test_bind_policy_network_address_needs_keys_or_insecure(key_dir: Path) -> None:
    with pytest.raises(InsecureBind, match="FRAMESTREAM_SERVE_BIND.*--insecure"):
        CurveRank(None, bind="0.0.0.0")
    plain = CurveRank(None, bind="0.0.0.0", insecure=True)  # explicit: allowed, plain
    try:
        client = RankClient(eps(plain), ClientSettings())
        assert client.infer(images(2), VERSION)[0].shape == (2, 10)
        client.close()
        assert not plain.guard.curve
    finally:
        plain.stop()
    secured = CurveRank(key_dir, bind="0.0.0.0")
    try:
        client = RankClient(eps(secured), settings(key_dir))
        assert client.infer(images(2), VERSION)[0].shape == (2, 10)
        client.close()
        assert secured.guard.curve
    finally:
        secured.stop()
    with pytest.raises(ConfigError, match="FRAMESTREAM_SERVE_CURVE_CLIENTS"):
        server_keys("0.0.0.0", str(key_dir / "server.key_secret"), "", False)


@pytest.mark.mpi
def test_serve_refuses_to_start_on_a_network_address_without_keys(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from launcher.errors import RankFailed
    from launcher.mpirun import run_mpi

    for name in [k for k in os.environ if k.startswith("FRAMESTREAM_SERVE_")]:
        monkeypatch.delenv(name)
    with pytest.raises(RankFailed) as err:
        run_mpi(1, "mpi_workers.serve", ["--bind", "0.0.0.0", "--version", VERSION,
                                         "--endpoints-file", str(tmp_path / "ep.json")],
                timeout=120, cwd=REPO)
    assert err.value.rank == 0 and err.value.message.startswith("InsecureBind: bad setting")
    assert "FRAMESTREAM_SERVE_BIND" in err.value.message and "--insecure" in err.value.message
    assert not (tmp_path / "ep.json").exists()


@pytest.mark.mpi
def test_serve_with_keys_on_a_network_address_answers_allowed_clients(key_dir: Path,
                                                                      tmp_path: Path) -> None:
    from launcher.mpirun import start_ranks
    from framestream import endpoints

    ep = tmp_path / "ep.json"
    proc = start_ranks("mpi_workers.serve", ["--bind", "0.0.0.0", "--version", VERSION,
                                             "--threads", "1", "--endpoints-file", str(ep),
                                             "--curve-secret", str(key_dir / "server.key_secret"),
                                             "--curve-clients", str(key_dir / "clients")],
                       n=2, output=tmp_path / "ranks.log", run_dir=tmp_path / "run", cwd=REPO)
    try:
        published = endpoints.wait_for(ep, 120)
        local = EndpointSet(published.generation, tuple(
            RankEndpoint(r.rank, r.endpoint.replace("0.0.0.0", "127.0.0.1"), r.host, r.pid)
            for r in published.ranks), VERSION)
        client = RankClient(local, settings(key_dir, chunk_frames=16))
        scores, _ = client.infer(images(64), VERSION)
        assert scores.shape == (64, 10)
        client.close()
        plain = RankClient(local, ClientSettings(request_timeout_s=0.3, outage_timeout_s=1.5),
                           refresh=lambda: local)
        try:
            with pytest.raises(RanksUnavailable):
                plain.infer(images(4), VERSION)
        finally:
            plain.close()
    finally:
        proc.stop()
    log = (tmp_path / "ranks.log").read_text(errors="replace")
    assert "CURVE, 2 allowed clients" in log, log[-2000:]


def test_key_cli_layout_permissions_and_settings(tmp_path: Path) -> None:
    d = tmp_path / "k"
    out = subprocess.run([sys.executable, "-m", "framestream.keys", "init", str(d)],
                         capture_output=True, text=True, timeout=60, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in d.iterdir()) == ["clients", "executors.key_secret",
                                                   "server.key", "server.key_secret"]
    assert [p.name for p in (d / "clients").iterdir()] == ["executors.key"]
    for secret in d.glob("*.key_secret"):
        assert secret.stat().st_mode & 0o077 == 0
    lines = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
    assert lines["FRAMESTREAM_SERVE_CURVE_CLIENTS"] == str((d / "clients").resolve())
    assert ClientSettings(curve_secret=lines["FRAMESTREAM_CLIENT_CURVE_SECRET"],
                          curve_server_key=lines["FRAMESTREAM_CLIENT_CURVE_SERVER_KEY"]).keys()
    again = subprocess.run([sys.executable, "-m", "framestream.keys", "init", str(d)],
                           capture_output=True, text=True, timeout=60, cwd=REPO,
                           env={**os.environ, "PYTHONPATH": str(REPO)})
    assert again.returncode == 1 and "already holds a server key" in again.stderr
    assert json.dumps(lines)  # plain strings, ready for an env file
