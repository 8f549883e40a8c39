"""Who may talk to a rank: the bind policy and ZeroMQ CURVE (keys, the allowed set, counters).

Shared by the ranks (:mod:`mpi_workers.rank_socket` binds a ROUTER) and the executors
(:mod:`etl.client` connects DEALERs), so both sides read keys the same way.

Policy for a rank's socket (:func:`server_keys`):

- bound to a loopback address (127.0.0.0/8, ::1, ``localhost``): plain ZeroMQ unless keys are
  configured (then CURVE there too);
- bound to anything else (an interface address, ``0.0.0.0``, ``*``, a host name): CURVE keys are
  required -- the rank's secret certificate and a folder of allowed client public certificates --
  and the rank refuses to start without them (:class:`InsecureBind`) unless ``insecure`` was given
  explicitly (``--insecure`` / ``FRAMESTREAM_SERVE_INSECURE=1``).

Keys are ZeroMQ certificate files (CZMQ's ``zcert`` format, what ``zmq.auth`` reads and writes),
made by ``python -m framestream.keys``. A client pins the server's public key from its own
configuration (never from the endpoint file, which only says *where* the ranks are), and its own
public key must be in the rank's allowed folder; anything else fails the handshake.

:class:`PeerGuard` counts what happens at the door of a rank (socket monitor events): accepted
connections, handshakes that succeeded, peers refused by the allowed set (``unauthorized``),
broken or mismatched handshakes (``bad_handshake``: plain client on a CURVE socket, wrong server
key, garbage), and connections that closed before any handshake (``no_handshake``). None of them
reach the serving loop; malformed *messages* from accepted peers are answered with ERROR there.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from framestream.errors import ConfigError
from framestream.settings import Section, env_name, section, setting

if TYPE_CHECKING:
    import zmq

log = logging.getLogger(__name__)

ZAP_DOMAIN = "framestream"
KEYS_HELP = "make them with `python -m framestream.keys init DIR`"


class InsecureBind(ConfigError):
    """A rank would listen beyond this host without authentication."""

    def __init__(self, setting: str, bind: str, insecure_flag: str) -> None:
        super().__init__(setting, bind, f"a loopback address, or CURVE keys for a network address "
                                        f"(FRAMESTREAM_SERVE_CURVE_SECRET and "
                                        f"FRAMESTREAM_SERVE_CURVE_CLIENTS; {KEYS_HELP}); "
                                        f"{insecure_flag} accepts unauthenticated clients there")


def is_loopback(host: str) -> bool:
    """True when ``host`` (a ZeroMQ tcp bind address) can only be reached from this host."""
    host = host.strip().strip("[]")
    if host in ("localhost", "ip6-localhost"):
        return True
    if host in ("*", "", "0.0.0.0", "::"):
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:  # a host name: loopback only if every address it names is
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False  # an interface name (eth0) or unresolvable: treat as reachable
    return bool(infos) and all(ipaddress.ip_address(i[4][0].split("%")[0]).is_loopback
                               for i in infos)


# ---------------------------------------------------------------------------------------------
# key files


class KeySettings(Section):
    """How key files are checked when they are loaded."""

    model_config = section("keys")

    # A secret certificate that other users can read (or write) is refused unless this is set:
    # e.g. a shared group that holds the ranks' secret on purpose. Never needed for the files
    # `python -m framestream.keys` writes (0600).
    allow_readable_secrets: bool = setting(
        False, "accept a ZeroMQ secret certificate that other users can read (a shared group)")


ALLOW_READABLE = env_name("keys", "allow_readable_secrets")


def _check_secret_file(path: Path, setting: str, allow_readable: bool) -> None:
    if not path.is_file():
        raise ConfigError(setting, str(path), f"a readable ZeroMQ secret certificate ({KEYS_HELP})")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        if not allow_readable:
            raise ConfigError(setting, str(path), f"a secret certificate only its owner can "
                                                  f"read (mode {mode:o}; chmod 600 it, or set "
                                                  f"{ALLOW_READABLE}=1 to accept it as it is)")
        log.warning("%s (%s) can be read by other users (mode %o), accepted because %s is set",
                    setting, path, mode, ALLOW_READABLE)


def load_secret(path: str | Path, setting: str,
                allow_readable: bool | None = None) -> tuple[bytes, bytes]:
    """(public, secret) Z85 keys from a ``*.key_secret`` certificate; ConfigError names ``setting``.

    A file that group or others may read or write is refused (``ConfigError``) unless
    ``allow_readable`` (default: ``FRAMESTREAM_KEYS_ALLOW_READABLE_SECRETS``)."""
    import zmq.auth

    path = Path(path).expanduser()
    if allow_readable is None:
        allow_readable = KeySettings.load().allow_readable_secrets
    _check_secret_file(path, setting, allow_readable)
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(setting, str(path), f"a ZeroMQ certificate ({exc})") from None
    if not public or not secret:
        raise ConfigError(setting, str(path), f"a *secret* certificate (the file holds no secret "
                                              f"key; {KEYS_HELP})")
    return public, secret


def load_public(path: str | Path, setting: str) -> bytes:
    import zmq.auth

    path = Path(path).expanduser()
    try:
        public, _ = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(setting, str(path), f"a ZeroMQ public certificate ({exc})") from None
    if not public:
        raise ConfigError(setting, str(path), f"a certificate with a public key ({KEYS_HELP})")
    return public


def allowed_keys(folder: str | Path, setting: str) -> dict[bytes, str]:
    """Public key -> file name for every ``*.key`` certificate in ``folder`` (at least one)."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ConfigError(setting, str(folder), f"a folder of allowed client certificates "
                                                f"(*.key; {KEYS_HELP})")
    keys = {load_public(p, setting): p.name for p in sorted(folder.glob("*.key"))}
    if not keys:
        raise ConfigError(setting, str(folder), "a folder holding at least one client *.key "
                                                "(`python -m framestream.keys add-client`)")
    return keys


def _public_keys(folder: Path) -> list[bytes]:
    """The z85 public keys of the readable ``*.key`` certificates in ``folder`` (possibly none:
    revoking the last client leaves it empty)."""
    import zmq.auth

    keys = []
    for path in sorted(folder.glob("*.key")):
        try:
            public, _ = zmq.auth.load_certificate(path)
        except (OSError, ValueError) as exc:
            log.error("allowed client certificate %s unreadable, not allowed: %s", path, exc)
            continue
        if public:
            keys.append(public)
    return keys


@dataclass(frozen=True)
class ServerKeys:
    public: bytes
    secret: bytes
    clients_dir: Path
    clients: tuple[str, ...]  # file names of the allowed certificates at start


def server_keys(bind: str, curve_secret: str, curve_clients: str, insecure: bool,
                prefix: str = "FRAMESTREAM_SERVE_", insecure_flag: str = "--insecure") -> ServerKeys | None:
    """Apply the bind policy; returns the keys to use, or None for plain ZeroMQ."""
    secret_setting, clients_setting = f"{prefix}CURVE_SECRET", f"{prefix}CURVE_CLIENTS"
    if curve_secret or curve_clients:
        if not curve_secret:
            raise ConfigError(secret_setting, "", f"the rank's secret certificate when "
                                                  f"{clients_setting} is set ({KEYS_HELP})")
        if not curve_clients:
            raise ConfigError(clients_setting, "", f"the folder of allowed client certificates "
                                                   f"when {secret_setting} is set: CURVE without "
                                                   f"it would let any client in ({KEYS_HELP})")
        public, secret = load_secret(curve_secret, secret_setting)
        allowed = allowed_keys(curve_clients, clients_setting)
        return ServerKeys(public, secret, Path(curve_clients).expanduser(),
                          tuple(allowed.values()))
    if is_loopback(bind):
        return None
    if insecure:
        log.warning("binding %s WITHOUT authentication (%s): anyone who can reach it can send "
                    "frames and read answers", bind, insecure_flag)
        return None
    raise InsecureBind(f"{prefix}BIND", bind, insecure_flag)


@dataclass(frozen=True)
class ClientKeys:
    public: bytes
    secret: bytes
    server: bytes


def client_keys(curve_secret: str, curve_server_key: str,
                prefix: str = "FRAMESTREAM_CLIENT_") -> ClientKeys | None:
    """The executor's keys (both settings or neither); None = plain ZeroMQ."""
    if not curve_secret and not curve_server_key:
        return None
    if not curve_secret or not curve_server_key:
        missing = f"{prefix}CURVE_SECRET" if not curve_secret else f"{prefix}CURVE_SERVER_KEY"
        raise ConfigError(missing, "", f"set together with the other CURVE setting ({KEYS_HELP})")
    public, secret = load_secret(curve_secret, f"{prefix}CURVE_SECRET")
    return ClientKeys(public, secret, load_public(curve_server_key, f"{prefix}CURVE_SERVER_KEY"))


def secure_client(sock: "zmq.Socket", keys: ClientKeys | None) -> None:
    """Make ``sock`` a CURVE client (before ``connect``); no-op for None."""
    if keys is not None:
        sock.curve_secretkey = keys.secret
        sock.curve_publickey = keys.public
        sock.curve_serverkey = keys.server


# ---------------------------------------------------------------------------------------------
# the rank's side


class PeerGuard:
    """CURVE server set-up (ZAP authenticator with the allowed folder) plus connection counters.

    Create it before the socket binds; call :meth:`poll` from the serving loop (non-blocking);
    :meth:`close` before the socket closes.
    """

    RELOAD_S = 5.0  # re-read the allowed folder this often when it changed (revocation)

    def __init__(self, ctx: "zmq.Context", sock: "zmq.Socket", keys: ServerKeys | None,
                 counter: Any = None, rank: int = 0) -> None:
        import zmq

        self.keys, self.rank, self.counter = keys, rank, counter
        self.counts = {k: 0 for k in ("accepted", "handshake_ok", "unauthorized", "bad_handshake",
                                      "no_handshake", "disconnected", "revoked")}
        self._allowed: frozenset[bytes] = frozenset()  # z85 public keys allowed right now
        self._auth = None
        self._dir_mtime = 0.0
        self._next_reload = 0.0
        self._unresolved = 0
        self.reloads = 0            # times the allowed folder was (re)read
        if keys is not None:
            from zmq.auth.thread import ThreadAuthenticator

            self._auth = ThreadAuthenticator(ctx, log=logging.getLogger("framestream.zap"))
            self._auth.start()
            self._load_allowed()
            sock.zap_domain = ZAP_DOMAIN.encode()
            # RFC 27 strictly: every handshake goes through ZAP, whatever domain a peer names
            sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)
            sock.curve_secretkey = keys.secret
            sock.curve_publickey = keys.public
            sock.curve_server = True
        self.sock = sock
        self.monitor = sock.get_monitor_socket(
            zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED
            | zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
            | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
        self._names = {zmq.EVENT_ACCEPTED: "accepted", zmq.EVENT_DISCONNECTED: "disconnected",
                       zmq.EVENT_HANDSHAKE_SUCCEEDED: "handshake_ok",
                       zmq.EVENT_HANDSHAKE_FAILED_AUTH: "unauthorized",
                       zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "bad_handshake",
                       zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "bad_handshake"}

    @property
    def curve(self) -> bool:
        return self.keys is not None

    @property
    def rejected(self) -> int:
        c = self.counts
        return c["unauthorized"] + c["bad_handshake"] + c["no_handshake"]

    def _load_allowed(self) -> None:
        assert self.keys is not None and self._auth is not None
        folder = self.keys.clients_dir
        self._dir_mtime = folder.stat().st_mtime
        self._auth.configure_curve(domain=ZAP_DOMAIN, location=str(folder))
        self._allowed = frozenset(_public_keys(folder))
        self.reloads += 1

    def admits(self, frame: Any) -> bool:
        """Whether a message received on the socket (any of its frames, read with
        ``copy=False``) comes from a key that is allowed *now*.

        ZAP checks a key once, at the handshake; a connection opened before its key was revoked
        stays open. Its messages carry the ZAP user id (the key, z85), checked here against the
        allowed folder as last (re)loaded, so a revocation reaches open connections within
        :attr:`RELOAD_S`. Plain ZeroMQ (no CURVE): always True."""
        if self._auth is None:
            return True
        try:
            user = frame.get("User-Id")
        except Exception:  # noqa: BLE001 -- a frame without metadata: not from a CURVE peer
            user = None
        if user is not None and user.encode() in self._allowed:
            return True
        self._count("revoked")
        log.warning("rank %d refused a message from a key that is no longer allowed (%d so far)",
                    self.rank, self.counts["revoked"])
        return False

    def _count(self, what: str) -> None:
        self.counts[what] += 1
        if self.counter is not None:
            self.counter.labels(rank=str(self.rank), event=what).inc()

    def poll(self) -> None:
        """Read pending monitor events (never blocks) and re-read a changed allowed folder."""
        import zmq
        from zmq.utils.monitor import recv_monitor_message

        while True:
            try:
                event = recv_monitor_message(self.monitor, zmq.NOBLOCK)
            except zmq.Again:
                break
            what = self._names.get(event["event"])
            if what is None:
                continue
            if what == "accepted":
                self._unresolved += 1
            elif what in ("handshake_ok", "unauthorized", "bad_handshake"):
                self._unresolved = max(0, self._unresolved - 1)
            elif what == "disconnected" and self._unresolved > 0:
                # closed before any handshake event: garbage, a port scan, a dropped TCP peer
                self._unresolved -= 1
                self._count("no_handshake")
            self._count(what)
            if what in ("unauthorized", "bad_handshake"):
                log.warning("rank %d refused a peer: %s (%s); %d refused so far", self.rank, what,
                            event.get("value"), self.rejected)
        now = time.monotonic()
        if self._auth is not None and now >= self._next_reload:
            self._next_reload = now + self.RELOAD_S
            try:
                changed = self.keys.clients_dir.stat().st_mtime != self._dir_mtime  # type: ignore[union-attr]
            except OSError:
                changed = False
            if changed:
                log.info("rank %d: allowed client keys changed, reloading", self.rank)
                self._load_allowed()

    def close(self) -> None:
        try:
            self.sock.disable_monitor()
        except Exception:  # the socket may already be closed; the monitor goes either way
            pass
        self.monitor.close(0)
        if self._auth is not None:
            self._auth.stop()
            self._auth = None

