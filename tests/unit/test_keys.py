"""CURVE key files: secrets are born 0600 (never chmod'ed into shape), a secret others can read is
refused unless FRAMESTREAM_KEYS_ALLOW_READABLE_SECRETS says otherwise, and a CURVE rank socket
enforces its ZAP domain."""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from framestream import keys as keys_cli
from framestream.errors import ConfigError
from framestream.security import ALLOW_READABLE, client_keys, load_secret, server_keys

_chmods: list[str] | None = None


def _audit(event: str, args: tuple[object, ...]) -> None:
    if _chmods is not None and event == "os.chmod":
        _chmods.append(str(args[0]))


sys.addaudithook(_audit)  # audit hooks cannot be removed: this one only records while asked


@pytest.fixture
def chmods() -> Iterator[list[str]]:
    global _chmods
    _chmods = []
    try:
        yield _chmods
    finally:
        _chmods = None


@pytest.fixture
def open_umask() -> Iterator[None]:
    old = os.umask(0)  # the worst case: files are created world-readable unless told otherwise
    try:
        yield
    finally:
        os.umask(old)


def test_secrets_are_written_0600_from_the_start(tmp_path: Path, chmods: list[str],
                                                 open_umask: None) -> None:
    keys_cli.init(tmp_path, ["executors"])
    keys_cli.add_client(tmp_path, "cam-gateway")
    secrets = sorted(tmp_path.glob("*.key_secret"))
    assert [p.name for p in secrets] == ["cam-gateway.key_secret", "executors.key_secret",
                                         "server.key_secret"]
    for p in secrets:
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    # born with that mode: no window in which another user could open it
    assert not [c for c in chmods if c.endswith(".key_secret")], chmods
    assert client_keys(str(tmp_path / "executors.key_secret"), str(tmp_path / "server.key"))


def test_a_secret_is_never_overwritten_nor_written_through_a_symlink(tmp_path: Path) -> None:
    keys_cli.init(tmp_path, [])
    with pytest.raises(FileExistsError):
        keys_cli.init(tmp_path, [])  # the server key exists: refused, not replaced
    target = tmp_path / "planted"
    (tmp_path / "evil.key_secret").symlink_to(target)
    with pytest.raises(FileExistsError):
        keys_cli.add_client(tmp_path, "evil")
    assert not target.exists()


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620])
def test_a_secret_others_can_read_is_refused_unless_allowed(tmp_path: Path, mode: int,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture
                                                            ) -> None:
    keys_cli.init(tmp_path, ["executors"])
    secret = tmp_path / "server.key_secret"
    secret.chmod(mode)
    monkeypatch.delenv(ALLOW_READABLE, raising=False)
    with pytest.raises(ConfigError) as err:
        server_keys("127.0.0.1", str(secret), str(tmp_path / "clients"), False)
    assert "FRAMESTREAM_SERVE_CURVE_SECRET" in str(err.value)
    assert ALLOW_READABLE == "FRAMESTREAM_KEYS_ALLOW_READABLE_SECRETS"
    assert ALLOW_READABLE in str(err.value) and "chmod 600" in str(err.value)
    monkeypatch.setenv(ALLOW_READABLE, "1")
    assert server_keys("127.0.0.1", str(secret), str(tmp_path / "clients"), False) is not None
    assert "accepted because" in caplog.text
    assert load_secret(secret, "X", allow_readable=True)
    with pytest.raises(ConfigError):
        load_secret(secret, "X", allow_readable=False)


@pytest.mark.zmq
def test_a_curve_rank_socket_enforces_its_zap_domain(tmp_path: Path) -> None:
    import zmq

    from framestream.security import PeerGuard

    keys_cli.init(tmp_path, ["executors"])
    keys = server_keys("127.0.0.1", str(tmp_path / "server.key_secret"),
                       str(tmp_path / "clients"), False)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    guard = PeerGuard(ctx, sock, keys)
    try:
        assert sock.getsockopt(zmq.ZAP_ENFORCE_DOMAIN) == 1
        assert sock.curve_server
    finally:
        guard.close()
        sock.close(0)
        ctx.term()
