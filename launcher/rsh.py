"""mpirun reaches other nodes through Ray instead of ssh.

OpenMPI starts its daemon (``orted``) on every other node of the hostfile by running
``<plm_rsh_agent> <host> <command>``. The launcher points ``plm_rsh_agent`` at a small script that
runs ``python -m launcher.rsh --socket S <host> <command>``: this agent hands the request to the
launcher process over a Unix socket, the launcher asks the bundle holder on that node
(:mod:`launcher.holders`) to run the command there, and the agent exits with its exit status,
like ``ssh`` would. So a Ray cluster is all mpirun needs: no ssh keys, no host list to keep in
sync, and the daemon runs inside the node's reservation.

Wire (one request per connection, JSON lines): agent -> ``{"host": h, "command": c}``;
launcher -> ``{"code": n, "output": "..."}``.
"""

from __future__ import annotations

import json
import logging
import shutil
import socket
import stat
import sys
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ray.actor import ActorHandle

log = logging.getLogger(__name__)


class RshServer:
    """Answers agents for one gang: host (node IP or host name) -> that node's holder."""

    def __init__(self, holders: Mapping[str, "ActorHandle"], timeout_s: float = 120.0) -> None:
        self.holders = dict(holders)
        self.directory = Path(tempfile.mkdtemp(prefix="fs-rsh-"))  # Unix socket paths are short
        self.path = self.directory / "rsh.sock"
        self.agent = self.directory / "rsh-agent"
        self._closed = threading.Event()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(str(self.path))
        self._sock.listen(16)
        self._sock.settimeout(0.5)
        self.agent.write_text(f"#!/bin/sh\nexec {sys.executable} -m launcher.rsh "
                              f"--socket {self.path} --timeout {timeout_s:g} \"$@\"\n")
        self.agent.chmod(self.agent.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        self._thread = threading.Thread(target=self._serve, name="rsh-server", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue  # wake up to notice close()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), name="rsh-request",
                             daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        import ray

        with conn, conn.makefile("rwb") as f:
            try:
                req = json.loads(f.readline())
                holder = self.holders.get(req["host"])
                if holder is None:
                    reply = {"code": 255, "output": f"launcher.rsh: {req['host']} holds no bundle "
                                                    f"of this gang (known: {sorted(self.holders)})"}
                else:
                    log.info("starting on %s: %s", req["host"], req["command"][:200])
                    ref = holder.spawn.remote(req["command"])
                    while not self._closed.is_set():
                        done, _ = ray.wait([ref], timeout=0.5)
                        if done:
                            code, output = ray.get(ref)
                            reply = {"code": code, "output": output}
                            break
                    else:
                        reply = {"code": 255, "output": "launcher.rsh: the gang was released"}
            except (ValueError, KeyError, ray.exceptions.RayError) as exc:
                reply = {"code": 255, "output": f"launcher.rsh: {type(exc).__name__}: {exc}"}
            f.write(json.dumps(reply).encode() + b"\n")
            f.flush()

    def close(self) -> None:
        self._closed.set()
        self._sock.close()
        self._thread.join(5)
        shutil.rmtree(self.directory, ignore_errors=True)


def main(argv: list[str]) -> int:
    """The agent: ``--socket S --timeout T [ssh options, ignored] HOST COMMAND...`` -> the
    command's exit status."""
    if len(argv) < 6 or argv[0] != "--socket" or argv[2] != "--timeout":
        print("usage: python -m launcher.rsh --socket PATH --timeout S HOST COMMAND...",
              file=sys.stderr)
        return 255
    path, timeout, rest = argv[1], float(argv[3]), argv[4:]
    while rest and rest[0].startswith("-"):  # ssh-style options OpenMPI may add: not ours
        rest = rest[1:]
    host, command = rest[0], " ".join(rest[1:])
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)  # FRAMESTREAM_LAUNCHER_RSH_TIMEOUT_S
        try:
            s.connect(path)
            s.sendall(json.dumps({"host": host, "command": command}).encode() + b"\n")
            reply = json.loads(s.makefile("rb").readline() or b"{}")
        except (OSError, ValueError) as exc:
            print(f"launcher.rsh: no answer from the launcher at {path}: {exc}", file=sys.stderr)
            return 255
    if reply.get("output"):
        sys.stderr.write(reply["output"])
    return int(reply.get("code", 255))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
