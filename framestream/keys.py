"""``python -m framestream.keys``: make and manage the ZeroMQ CURVE keys of ranks and executors.

    python -m framestream.keys init DIR [--client NAME ...]   # server pair + client pairs
    python -m framestream.keys add-client DIR NAME            # one more allowed client
    python -m framestream.keys revoke DIR NAME                # drop a client from the allowed set
    python -m framestream.keys show DIR                       # the settings to export

Layout (ZeroMQ certificate files, the format ``zmq.auth`` and CZMQ read)::

    DIR/server.key          the ranks' public key: every client pins it
    DIR/server.key_secret   the ranks' secret (0600): only the ranks' hosts need it
    DIR/clients/NAME.key    allowed client public keys: the ranks' allowed set
    DIR/NAME.key_secret     client NAME's secret (0600): only that client needs it

Ranks re-read ``DIR/clients`` within seconds of a change, so ``add-client`` and ``revoke`` need no
restart. Secret files are never overwritten: remove one by hand to replace it.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

from framestream.exits import NOT_DONE, OK, entry_point

SERVER = "server"
_BANNER = ("#   ****  Generated on {at} by framestream.keys  ****\n"
           "#   ZeroMQ CURVE {kind} Certificate\n{note}\n")


def _write_cert(path: Path, kind: str, name: str, public: bytes, secret: bytes | None) -> None:
    """One certificate file in CZMQ's zcert format (what ``zmq.auth.load_certificate`` reads).

    Created with ``O_CREAT | O_EXCL`` and its final mode in one call: a secret file is 0600 from
    the first byte (whatever the umask), never replaced, and never follows a planted symlink.
    """
    note = ("#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.\n"
            if secret else "#   Give it to whoever must trust this key.\n")
    text = (_BANNER.format(at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                           kind=kind, note=note)
            + f'metadata\n    framestream = "{name}"\ncurve\n'
            + f'    public-key = "{public.decode("ascii")}"\n'
            + (f'    secret-key = "{secret.decode("ascii")}"\n' if secret else ""))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0),
                 0o600 if secret else 0o644)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(text)


def _make_pair(folder: Path, name: str) -> tuple[Path, Path]:
    import zmq

    public, secret = folder / f"{name}.key", folder / f"{name}.key_secret"
    if secret.exists():
        raise FileExistsError(f"{secret} exists; remove it first to make a new key")
    folder.mkdir(parents=True, exist_ok=True)
    public_key, secret_key = zmq.curve_keypair()
    _write_cert(secret, "**Secret**", name, public_key, secret_key)
    public.unlink(missing_ok=True)  # a stale public half of a removed secret: replace it
    _write_cert(public, "Public", name, public_key, None)
    return public, secret


def init(folder: Path, clients: list[str]) -> None:
    if (folder / f"{SERVER}.key_secret").exists():
        raise FileExistsError(f"{folder} already holds a server key; use add-client or a new DIR")
    _make_pair(folder, SERVER)
    (folder / "clients").mkdir(parents=True, exist_ok=True)
    for name in clients:
        add_client(folder, name)


def add_client(folder: Path, name: str) -> Path:
    if not name.replace("-", "").replace("_", "").isalnum() or name == SERVER:
        raise ValueError(f"client name {name!r}: letters, digits, - and _ only, not {SERVER!r}")
    public, secret = _make_pair(folder, name)
    allowed = folder / "clients" / public.name
    allowed.parent.mkdir(parents=True, exist_ok=True)
    public.replace(allowed)  # the public half lives only in the allowed set
    return secret


def revoke(folder: Path, name: str) -> None:
    allowed = folder / "clients" / f"{name}.key"
    if not allowed.exists():
        raise FileNotFoundError(f"{allowed}: no such allowed client")
    allowed.unlink()


def settings_lines(folder: Path) -> list[str]:
    folder = folder.resolve()
    clients = sorted(p.name[: -len(".key_secret")] for p in folder.glob("*.key_secret")
                     if p.name != f"{SERVER}.key_secret")
    lines = ["# ranks (mpirun ... python -m mpi_workers.serve, training ranks fed over ZeroMQ):",
             f"FRAMESTREAM_SERVE_CURVE_SECRET={folder / (SERVER + '.key_secret')}",
             f"FRAMESTREAM_SERVE_CURVE_CLIENTS={folder / 'clients'}",
             "# executors / the stream driver (the same paths must exist on every executor host):",
             f"FRAMESTREAM_CLIENT_CURVE_SERVER_KEY={folder / (SERVER + '.key')}"]
    for name in clients or ["<name>"]:
        lines.append(f"FRAMESTREAM_CLIENT_CURVE_SECRET={folder / (name + '.key_secret')}")
    return lines


@entry_point
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m framestream.keys", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("init", help="make the ranks' key pair and client key pairs")
    i.add_argument("dir", type=Path)
    i.add_argument("--client", action="append", default=None,
                   help="client name (repeatable; default: executors)")
    a = sub.add_parser("add-client", help="make one more allowed client key pair")
    a.add_argument("dir", type=Path)
    a.add_argument("name")
    r = sub.add_parser("revoke", help="remove a client from the allowed set")
    r.add_argument("dir", type=Path)
    r.add_argument("name")
    s = sub.add_parser("show", help="print the settings that use DIR's keys")
    s.add_argument("dir", type=Path)
    args = p.parse_args(argv)
    try:
        if args.cmd == "init":
            init(args.dir, args.client or ["executors"])
        elif args.cmd == "add-client":
            add_client(args.dir, args.name)
        elif args.cmd == "revoke":
            revoke(args.dir, args.name)
    except (OSError, ValueError) as exc:  # a refused key operation, whatever its cause
        print(f"error: {exc}", file=sys.stderr)
        return NOT_DONE
    print("\n".join(settings_lines(args.dir)))
    return OK


if __name__ == "__main__":
    sys.exit(main())
