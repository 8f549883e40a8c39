"""How executors on any host learn a new rank generation in the middle of a batch: the driver's
endpoint directory.

Rank 0 publishes the endpoint set on the launcher's host (the driver's); executors run on other
hosts, with no disk in common with it. Each micro-batch carries the set the driver saw when the
batch started, and a :class:`DirectoryRef`: the address of a small ZeroMQ ROUTER that the driver
serves on the address its executors already reach it at (Spark's ``spark.driver.host``, bound on
``spark.driver.bindAddress``), and a token made for this run. An executor whose ranks stop
answering, and every executor about once a second while it works (the dispatcher's ``Refresh``),
asks it for the newest set; no executor reads a file.

The directory hands out where the ranks are, nothing else: a request without the run's token gets
an empty answer, and the ranks' identity is never taken from it (off loopback executors pin the
ranks' CURVE key from their own settings, :mod:`framestream.security`).

Wire: request ``[b"", token]``; answer ``[b"", endpoint-set JSON]`` (empty when nothing is
published yet or the token is wrong). Answers are capped at :data:`MAX_ANSWER_BYTES`.
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import zmq

from framestream import endpoints as endpoints_mod
from framestream.endpoints import EndpointSet

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

MAX_ANSWER_BYTES = 1 << 20  # an endpoint set of thousands of ranks fits
MAX_REQUEST_BYTES = 256
RESEND_S = 2.0  # a request unanswered this long is asked again (the driver may have restarted)


@dataclass(frozen=True)
class DirectoryRef:
    """What a task needs to ask the driver's directory: shipped with every micro-batch."""

    address: str  # tcp://<spark.driver.host>:<port>
    token: str

    def __repr__(self) -> str:  # the token stays out of logs and Spark's task descriptions
        return f"DirectoryRef({self.address!r}, token=...)"


class EndpointDirectory:
    """The driver's side: answers with the set published at ``endpoints_file`` (read when asked,
    so a relaunch is seen at once). Serves from a thread of its own until :meth:`close`."""

    def __init__(self, endpoints_file: str | Path, bind_host: str = "127.0.0.1",
                 advertise_host: str | None = None,
                 read: Callable[[], EndpointSet | None] | None = None) -> None:
        self.endpoints_file = Path(endpoints_file)
        self._read = read or (lambda: endpoints_mod.read(self.endpoints_file))
        self._token = secrets.token_hex(16)
        self._stop = threading.Event()
        self.answered = self.refused = 0
        self._ctx = zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.ROUTER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST_BYTES)
        host = f"[{bind_host}]" if ":" in bind_host else bind_host
        if ":" in bind_host:
            self._sock.setsockopt(zmq.IPV6, 1)
        self._sock.bind(f"tcp://{host}:*")
        port = int(self._sock.getsockopt_string(zmq.LAST_ENDPOINT).rsplit(":", 1)[1])
        shown = advertise_host or bind_host
        shown = f"[{shown}]" if ":" in shown else shown
        self.ref = DirectoryRef(f"tcp://{shown}:{port}", self._token)
        # the socket moves to the serving thread: only that thread touches it from now on
        self._thread = threading.Thread(target=self._serve, name="endpoint-directory",
                                        daemon=True)
        self._thread.start()
        log.info("endpoint directory for executors at %s", self.ref.address)

    def _serve(self) -> None:
        sock = self._sock
        try:
            while not self._stop.is_set():
                if not sock.poll(200):
                    continue
                frames = sock.recv_multipart()
                if len(frames) != 3 or frames[1] != b"":
                    continue  # not our wire: dropped, the asker's own timeout covers it
                ident, token = frames[0], frames[2]
                if hmac.compare_digest(token, self._token.encode()):
                    current = self._current()
                    self.answered += 1
                else:
                    current, self.refused = b"", self.refused + 1
                sock.send_multipart([ident, b"", current])
        finally:
            sock.close(0)

    def _current(self) -> bytes:
        try:
            published = self._read()
        except (OSError, ValueError, KeyError, TypeError) as exc:  # half a file cannot happen
            log.error("endpoint directory: cannot read %s: %s", self.endpoints_file, exc)
            return b""
        return b"" if published is None else published.to_json().encode()[:MAX_ANSWER_BYTES]

    def close(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)
        log.info("endpoint directory at %s closed: answered %d requests, refused %d",
                 self.ref.address, self.answered, self.refused)

    def __enter__(self) -> "EndpointDirectory":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DirectoryClient:
    """The executor's side, never blocking: :meth:`latest` returns the newest set the directory
    has answered since the last call (or None) and asks again when no question is open."""

    def __init__(self, ref: DirectoryRef, ctx: zmq.Context | None = None) -> None:
        self.ref = ref
        self._sock = (ctx or zmq.Context.instance()).socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.MAXMSGSIZE, MAX_ANSWER_BYTES + 64)
        self._sock.setsockopt(zmq.SNDHWM, 2)
        self._sock.connect(ref.address)
        self._asked_at: float | None = None

    def latest(self) -> EndpointSet | None:
        newest: EndpointSet | None = None
        while self._sock.poll(0):
            frames = self._sock.recv_multipart(zmq.NOBLOCK)
            self._asked_at = None
            if len(frames) == 2 and frames[1]:
                try:
                    got = EndpointSet.from_dict(json.loads(frames[1]))
                except (ValueError, KeyError, TypeError) as exc:
                    log.error("endpoint directory %s: unreadable answer: %s", self.ref.address,
                              exc)
                    continue
                if newest is None or got.generation >= newest.generation:
                    newest = got
        now = time.monotonic()
        if self._asked_at is None or now - self._asked_at > RESEND_S:
            try:
                self._sock.send_multipart([b"", self.ref.token.encode()], zmq.NOBLOCK)
                self._asked_at = now
            except zmq.Again:
                pass  # the queue to an unreachable driver is full: ask again next time
        return newest

    def close(self) -> None:
        self._sock.close(0)


def for_session(spark: "SparkSession", endpoints_file: str | Path) -> EndpointDirectory:
    """A directory where this driver's executors reach the driver: bound on Spark's
    ``spark.driver.bindAddress``, announced as ``spark.driver.host``."""
    conf = spark.sparkContext.getConf()
    host = conf.get("spark.driver.host", "127.0.0.1") or "127.0.0.1"
    bind = conf.get("spark.driver.bindAddress", host) or host
    return EndpointDirectory(endpoints_file, bind_host=bind, advertise_host=host)
