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
import sys
from pathlib import Path

from framestream.security import harden_permissions

SERVER = "server"


def _make_pair(folder: Path, name: str) -> tuple[Path, Path]:
    import zmq.auth

    public, secret = folder / f"{name}.key", folder / f"{name}.key_secret"
    if secret.exists():
        raise FileExistsError(f"{secret} exists; remove it first to make a new key")
    folder.mkdir(parents=True, exist_ok=True)
    zmq.auth.create_certificates(folder, name, metadata={"framestream": name})
    harden_permissions(secret)
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
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("\n".join(settings_lines(args.dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
