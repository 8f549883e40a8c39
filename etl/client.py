"""The executor side of the data plane: send preprocessed frames to the ranks, get scores back.

One DEALER socket per rank of the current endpoint generation. Requests are chunks of at most
``chunk_frames`` frames; each rank has at most ``credits_per_rank`` requests in flight (a slow rank
slows the stream instead of growing memory) and new requests go to the rank with the fewest in
flight. Every request has a deadline on this process's monotonic clock and carries the remaining
duration (``ttl``) to the rank, which counts it on its own clock: no two hosts' wall clocks are
ever compared. When the deadline passes, the request is re-sent to another rank, the slow rank is
told to drop it if it still waits there (CANCEL), and the slow rank is avoided until it answers
again. When no rank gives a useful answer, the client re-reads the endpoint set and moves to a
newer generation (the launcher relaunched the ranks); after ``outage_timeout_s`` without a useful
answer (an EXPIRED reply is none) it gives up with :class:`RanksUnavailable`, which fails the
Spark task so Spark retries it.

Replies are matched by request id, so a late answer to a request that was re-sent is dropped.

With ``curve_secret`` and ``curve_server_key`` set, every socket is a CURVE client: it proves its
key to the ranks (which admit only keys in their allowed folder) and checks theirs against the
pinned server key (see :mod:`framestream.security`). A reply that does not follow the protocol is
logged and dropped; its request is re-sent when its deadline passes.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import zmq

from framestream.errors import DeadlineExceeded, FramestreamError
from framestream.security import ClientKeys, client_keys, secure_client
from framestream.settings import Section, section, setting
from framestream.endpoints import EndpointSet
from framestream.wire import Message, Op, ProtocolError, decode, encode

log = logging.getLogger(__name__)
_RECONNECT_PROBE_S = 0.02  # how soon a rank whose connection was not up yet is tried again


class ClientSettings(Section):
    """An executor's ZeroMQ client to the ranks."""

    model_config = section("client")

    chunk_frames: int = setting(256, "frames per request to a rank",
                                ok=lambda v: 1 <= v <= 65536, expected="1..65536")
    credits_per_rank: int = setting(2, "requests in flight per rank",
                                    ok=lambda v: 1 <= v <= 64, expected="1..64")
    # Arrow batches an executor hands to the ranks before it collects the oldest (etl/classify.py)
    batches_ahead: int = setting(1, "Arrow batches an executor sends before it collects the "
                                    "oldest (0 = one at a time)",
                                 ok=lambda v: 0 <= v <= 8, expected="0..8")
    request_timeout_s: float = setting(30.0, "seconds before a request is re-sent to another rank",
                                       ok=lambda v: v > 0, expected="> 0")
    outage_timeout_s: float = setting(120.0, "seconds without a useful answer from any rank "
                                             "before the task fails", ok=lambda v: v > 0,
                                      expected="> 0")
    curve_secret: str = setting("", "this client's ZeroMQ CURVE secret certificate")
    curve_server_key: str = setting("", "the ranks' public certificate, pinned")
    max_reply_bytes: int = setting(256 * 1024 * 1024, "largest reply accepted, in bytes",
                                   ok=lambda v: v > 0, expected="> 0")

    def keys(self) -> ClientKeys | None:
        return client_keys(self.curve_secret, self.curve_server_key)


class RanksUnavailable(DeadlineExceeded):
    """No rank answered and no new generation was published in time."""


class RankError(FramestreamError):
    """A rank refused a request for a reason a retry cannot fix (bad shape, unknown model)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"rank refused the request: {code}: {detail}")
        self.code = code


class Answer(NamedTuple):
    scores: np.ndarray   # float32 [frames, classes]
    version: str         # the model version that answered
    rank: int            # the rank that answered


@dataclass
class _Request:
    rid: str
    tag: Any
    tensors: tuple[np.ndarray, ...]
    version: str | None
    op: Op = Op.INFER
    rank: int = -1
    deadline: float = 0.0   # time.monotonic() of this process
    attempts: int = 0


@dataclass
class _Rank:
    sock: zmq.Socket
    endpoint: str
    inflight: set[str] = field(default_factory=set)
    # Not chosen before this monotonic time: briefly after its connection was not up yet, for a
    # request timeout after it let a request pass its deadline. Any reply clears it.
    avoid_until: float = 0.0

    def avoided(self, now: float) -> bool:
        return self.avoid_until > now


class RankClient:
    def __init__(self, endpoints: EndpointSet, settings: ClientSettings | None = None,
                 refresh: Callable[[], EndpointSet | None] | None = None) -> None:
        self.settings = settings or ClientSettings.load()
        self._refresh = refresh or (lambda: None)
        self._ctx = zmq.Context.instance()
        self._ids = itertools.count()
        self._prefix = f"{os.getpid():x}-{id(self):x}-"
        self._ranks: list[_Rank] = []
        self._queue: list[_Request] = []       # waiting for a credit
        self._open: dict[str, _Request] = {}   # sent, waiting for an answer
        self._done: dict[Any, Answer] = {}
        self.generation = -1
        self.resent = 0
        self._outage_since: float | None = None  # monotonic; reset by useful answers only
        self._expired_replies = 0                # EXPIRED answers since the last useful one
        self._next_refresh = 0.0
        self._turn = os.getpid()  # executors start their turns at different ranks
        self._keys = self.settings.keys()  # ConfigError now, not on the first request
        self._connect(endpoints)

    # -- connections --------------------------------------------------------------------------
    def _connect(self, endpoints: EndpointSet) -> None:
        for r in self._ranks:
            r.sock.close(0)
        self._ranks = []
        for ep in endpoints.endpoints:
            sock = self._ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.IMMEDIATE, 1)  # queue only on live connections
            sock.setsockopt(zmq.MAXMSGSIZE, self.settings.max_reply_bytes)
            secure_client(sock, self._keys)
            sock.connect(ep)
            self._ranks.append(_Rank(sock, ep))
        self._poller = zmq.Poller()
        for r in self._ranks:
            self._poller.register(r.sock, zmq.POLLIN)
        self.generation = endpoints.generation
        for req in self._open.values():      # whatever was in flight goes to the new ranks
            self._queue.append(req)
        self._open.clear()
        log.info("connected to %d ranks of generation %d", len(self._ranks), self.generation)

    def reconnect(self, endpoints: EndpointSet) -> None:
        """Move to another endpoint set (requests in flight are re-sent there)."""
        self._connect(endpoints)

    def close(self) -> None:
        for r in self._ranks:
            r.sock.close(0)
        self._ranks = []

    # -- public -------------------------------------------------------------------------------
    def submit(self, tag: Any, images: np.ndarray, version: str | None,
               labels: np.ndarray | None = None) -> None:
        """Queue one request (at most chunk_frames frames) and send what the credits allow.

        With ``labels`` it is a TRAIN request (frames for the training ranks), else INFER.

        Blocks while every credit is taken and a request already waits, so the caller (the
        decode loop) runs at the ranks' pace and memory stays bounded.
        """
        tensors, op = ((images,), Op.INFER) if labels is None else ((images, labels), Op.TRAIN)
        self._queue.append(_Request(self._prefix + str(next(self._ids)), tag, tensors, version, op))
        self._pump(wait=False)
        while len(self._queue) > 1:
            self._pump(wait=True)

    def pending(self) -> int:
        return len(self._queue) + len(self._open)

    def gather(self, tags: Collection[Any] | None = None) -> dict[Any, Answer]:
        """Wait for the requests submitted with ``tags`` (every request when None); returns
        tag -> Answer for those. Later requests stay in flight, so the caller can hand the ranks
        the next batch before it collects this one."""
        if tags is None:
            while self.pending():
                self._pump(wait=True)
            tags = list(self._done)
        while missing := [t for t in tags if t not in self._done]:
            if not self.pending():
                raise KeyError(f"no request was submitted with tag(s) {missing}")
            self._pump(wait=True)
        return {t: self._done.pop(t) for t in tags}

    def infer(self, images: np.ndarray, version: str | None) -> tuple[np.ndarray, str]:
        """Classify any number of frames (split into chunks); returns (scores, version)."""
        n = self.settings.chunk_frames
        for i, start in enumerate(range(0, len(images), n)):
            self.submit(i, images[start:start + n], version)
        done = self.gather()
        if not done:
            return np.zeros((0, 0), np.float32), version or ""
        parts = [done[i] for i in range(len(done))]
        return np.concatenate([p.scores for p in parts]), parts[0].version

    # -- the pump -----------------------------------------------------------------------------
    def _pump(self, wait: bool) -> None:
        if wait:
            self._follow_generation()
        self._send_queued()
        timeout_ms = 0
        if wait:
            # until the next deadline, at most 1 s; queued work also wakes when an avoided rank
            # may be tried again (all on this process's monotonic clock)
            now = time.monotonic()
            wait_s = min((r.deadline for r in self._open.values()), default=math.inf) - now
            if self._queue:
                wait_s = min([wait_s] + [r.avoid_until - now for r in self._ranks
                                         if r.avoided(now)])
            timeout_ms = int(max(0.0, min(1.0, wait_s)) * 1000) + 1
        for sock, _ in self._poller.poll(timeout_ms):
            self._drain(sock)
        self._expire()
        if wait and not self._open and self._queue:
            self._no_rank_can_take()

    def _send_queued(self) -> None:
        while self._queue:
            now = time.monotonic()
            live = [i for i, r in enumerate(self._ranks)
                    if not r.avoided(now) and len(r.inflight) < self.settings.credits_per_rank]
            if not live:
                return
            req = self._queue[0]
            # least loaded, not the rank that just failed this request when there is another,
            # ties taken in turn so that light load spreads over the ranks too
            n = len(self._ranks)
            live.sort(key=lambda i: (i == req.rank, len(self._ranks[i].inflight),
                                     (i - self._turn) % n))
            rank = live[0]
            self._turn = (rank + 1) % n
            msg = Message(req.op, req.rid, req.tensors, req.version,
                          ttl=self.settings.request_timeout_s)
            try:
                self._ranks[rank].sock.send_multipart(encode(msg), zmq.NOBLOCK, copy=False)
            except zmq.Again:  # not connected (yet): try the others, this one again shortly
                self._ranks[rank].avoid_until = now + _RECONNECT_PROBE_S
                continue
            self._queue.pop(0)
            req.rank, req.attempts = rank, req.attempts + 1
            req.deadline = now + self.settings.request_timeout_s
            self._ranks[rank].inflight.add(req.rid)
            self._open[req.rid] = req

    def _drain(self, sock: zmq.Socket) -> None:
        while True:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            rank = next(i for i, r in enumerate(self._ranks) if r.sock is sock)
            self._ranks[rank].avoid_until = 0.0
            try:
                msg = decode(frames, max_bytes=self.settings.max_reply_bytes)
            except ProtocolError as exc:
                log.error("unreadable reply from %s: %s", self._ranks[rank].endpoint, exc)
                continue
            if msg.op is Op.ERROR and msg.meta.get("code") == "EXPIRED":
                # The rank got to it after its ttl: no answer, and no sign of progress either (a
                # rank that answers only EXPIRED must not hold the task up forever). Our own
                # deadline re-sends it.
                self._expired_replies += 1
                continue
            req = self._open.get(str(msg.id))
            if req is None:
                continue  # a late answer to a request that was re-sent and answered already
            self._outage_since, self._expired_replies = None, 0
            del self._open[req.rid]
            self._ranks[req.rank].inflight.discard(req.rid)
            if msg.op is Op.ERROR:
                raise RankError(str(msg.meta.get("code")), str(msg.meta.get("detail")))
            scores = np.array(msg.tensors[0]) if msg.tensors else np.zeros((0, 0), np.float32)
            self._done[req.tag] = Answer(scores, msg.model or "", int(msg.meta.get("rank", -1)))

    def _expire(self) -> None:
        now = time.monotonic()
        for rid, req in list(self._open.items()):
            if req.deadline > now:
                continue
            del self._open[rid]
            silent = self._ranks[req.rank]
            silent.inflight.discard(rid)
            silent.avoid_until = now + self.settings.request_timeout_s
            if req.op is Op.INFER:  # if it still waits at the slow rank, it is not computed twice
                cancel = Message(Op.CANCEL, f"cancel-{rid}", meta={"request": rid})
                try:
                    silent.sock.send_multipart(encode(cancel), zmq.NOBLOCK)
                except zmq.Again:
                    pass  # not connected: nothing of ours can be waiting there either
            self.resent += 1
            log.warning("request %s to %s passed its %.1fs deadline; re-sending (attempt %d)",
                        rid, silent.endpoint, self.settings.request_timeout_s, req.attempts + 1)
            self._queue.insert(0, req)

    def _follow_generation(self, every_s: float = 1.0) -> bool:
        """Move to a newer endpoint generation if one was published (ranks were relaunched)."""
        now = time.monotonic()
        if now < self._next_refresh:
            return False
        self._next_refresh = now + every_s
        newer = self._refresh()
        if newer is not None and newer.generation > self.generation:
            self._connect(newer)
            return True
        return False

    def _no_rank_can_take(self) -> None:
        """Nothing in flight, work queued, every rank silent: look for a new generation."""
        now = time.monotonic()
        if self._outage_since is None:
            self._outage_since = now
        if self._follow_generation(every_s=0.2):
            return
        if all(r.avoided(now) for r in self._ranks):
            # Give silent ranks another chance now and then (they may only have been slow).
            for r in self._ranks:
                r.avoid_until = 0.0
        if now - self._outage_since > self.settings.outage_timeout_s:
            hint = ("" if self._keys else "if the ranks bind a network address they require "
                    "CURVE: set FRAMESTREAM_CLIENT_CURVE_SECRET and _CURVE_SERVER_KEY")
            if self._expired_replies:
                hint = (f"the ranks answered {self._expired_replies} times EXPIRED (each request "
                        f"waited there longer than its ttl): they are overloaded or stalled; "
                        f"raise FRAMESTREAM_CLIENT_REQUEST_TIMEOUT_S or add ranks")
            raise RanksUnavailable("the executor", f"an answer from any rank of generation "
                                   f"{self.generation} or a new generation", self.settings.
                                   outage_timeout_s, "FRAMESTREAM_CLIENT_OUTAGE_TIMEOUT_S",
                                   detail=hint)
        time.sleep(0.05)  # ranks are down: wait a little before probing the endpoint set again


_clients: dict[str, RankClient] = {}  # one per Python worker process, reused across tasks


def cached_client(endpoints_json: str, endpoints_file: str, settings: ClientSettings) -> RankClient:
    """The executor process's client for the ranks published at ``endpoints_file``.

    Spark reuses Python workers across tasks, so the sockets stay open between micro-batches.
    ``endpoints_json`` is the set the driver saw when the batch started: a newer generation than
    the client's means the ranks were relaunched.
    """
    import json

    from framestream import endpoints as endpoints_mod

    known = EndpointSet.from_dict(json.loads(endpoints_json))
    client = _clients.get(endpoints_file)
    if client is None or client.settings != settings:
        if client is not None:
            client.close()
        client = RankClient(known, settings, refresh=lambda: endpoints_mod.read(endpoints_file))
        _clients[endpoints_file] = client
    elif known.generation > client.generation:
        client.reconnect(known)
    return client
