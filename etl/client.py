"""The executor side of the data plane: send preprocessed frames to the ranks, get scores back.

One DEALER socket per rank of the current endpoint generation. Requests are chunks of at most
``chunk_frames`` frames; each rank has at most ``credits_per_rank`` requests in flight (a slow rank
slows the stream instead of growing memory) and new requests go to the rank with the fewest in
flight. Every request has a deadline on this process's monotonic clock and carries the remaining
duration (``ttl``) to the rank, which counts it on its own clock: no two hosts' wall clocks are
ever compared. When the deadline passes, the request is re-sent to another rank, the slow rank is
told to drop it if it still waits there (CANCEL), and the slow rank is avoided until it answers
again. When no rank gives a useful answer, the client asks the driver's endpoint directory
(:mod:`etl.directory`) for the newest set and moves to a newer generation (the launcher relaunched the ranks); after ``outage_timeout_s`` without a useful
answer (an EXPIRED reply is none) it gives up with :class:`RanksUnavailable`, which fails the
Spark task so Spark retries it.

Every one of those decisions is made by the pure :class:`framestream.dispatch.Dispatcher` (events
in, actions out, tested without sockets in ``tests/unit/test_dispatch.py``); this module is the
pump that moves its bytes. Replies are matched by request id: the first answer wins (a late one
from the slow rank too, and the copy re-sent since is then withdrawn), a second one is dropped.

With ``curve_secret`` and ``curve_server_key`` set, every socket is a CURVE client: it proves its
key to the ranks (which admit only keys in their allowed folder) and checks theirs against the
pinned server key (see :mod:`framestream.security`). A reply that does not follow the protocol is
logged and dropped; its request is re-sent when its deadline passes.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import zmq

from framestream.dispatch import (Action, Cancel, Deliver, Dispatcher, Fail, Policy, Refresh,
                                  Send, Unavailable)
from etl.directory import DirectoryClient, DirectoryRef
from etl.errors import RankError, RanksUnavailable  # noqa: F401  (also etl.client's API)
from framestream.security import ClientKeys, client_keys, secure_client
from framestream.settings import Section, section, setting
from framestream.endpoints import EndpointSet
from framestream.wire import Message, Op, ProtocolError, decode, encode

log = logging.getLogger(__name__)


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


class Answer(NamedTuple):
    scores: np.ndarray   # float32 [frames, classes]
    version: str         # the model version that answered
    rank: int            # the rank that answered


class RankClient:
    """The ZeroMQ pump around a :class:`framestream.dispatch.Dispatcher`: it moves the bytes the
    dispatcher's actions ask for and reports what comes back; every decision (which rank, when to
    re-send, whom to avoid, when to give up) is the dispatcher's."""

    def __init__(self, endpoints: EndpointSet, settings: ClientSettings | None = None,
                 refresh: Callable[[], EndpointSet | None] | None = None,
                 directory: DirectoryRef | None = None) -> None:
        """``refresh`` (or the driver's ``directory``) gives a newer endpoint set, if any."""
        self.settings = settings or ClientSettings.load()
        self._ctx = zmq.Context.instance()
        self.directory = directory
        self._directory = DirectoryClient(directory, self._ctx) if directory else None
        self._refresh = refresh or (self._directory.latest if self._directory else
                                    (lambda: None))
        self._ids = itertools.count()
        self._prefix = f"{os.getpid():x}-{id(self):x}-"
        self._socks: list[zmq.Socket] = []
        self._endpoints: list[str] = []
        self._rank_of: dict[zmq.Socket, int] = {}
        self._done: dict[Any, Answer] = {}
        s = self.settings
        # executors start their turns at different ranks
        self.dispatcher = Dispatcher(Policy(s.credits_per_rank, s.request_timeout_s,
                                            s.outage_timeout_s), first_turn=os.getpid())
        self._keys = self.settings.keys()  # ConfigError now, not on the first request
        self._connect(endpoints)

    @property
    def generation(self) -> int:
        return self.dispatcher.generation

    @property
    def resent(self) -> int:
        return self.dispatcher.resent

    # -- connections --------------------------------------------------------------------------
    def _connect(self, endpoints: EndpointSet) -> None:
        for sock in self._socks:
            sock.close(0)
        self._socks, self._endpoints = [], list(endpoints.endpoints)
        for ep in self._endpoints:
            sock = self._ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.IMMEDIATE, 1)  # queue only on live connections
            sock.setsockopt(zmq.MAXMSGSIZE, self.settings.max_reply_bytes)
            secure_client(sock, self._keys)
            sock.connect(ep)
            self._socks.append(sock)
        self._rank_of = {sock: i for i, sock in enumerate(self._socks)}
        self._poller = zmq.Poller()
        for sock in self._socks:
            self._poller.register(sock, zmq.POLLIN)
        log.info("connected to %d ranks of generation %d", len(self._socks), endpoints.generation)
        # whatever was in flight goes to the new ranks
        self._apply(self.dispatcher.new_generation(time.monotonic(), endpoints.generation,
                                                   len(self._socks)))

    def reconnect(self, endpoints: EndpointSet) -> None:
        """Move to another endpoint set (requests in flight are re-sent there)."""
        self._connect(endpoints)

    def close(self) -> None:
        for sock in self._socks:
            sock.close(0)
        self._socks = []
        if self._directory is not None:
            self._directory.close()
            self._directory = None

    # -- public -------------------------------------------------------------------------------
    def submit(self, tag: Any, images: np.ndarray, version: str | None,
               labels: np.ndarray | None = None) -> None:
        """Queue one request (at most chunk_frames frames) and send what the credits allow.

        With ``labels`` it is a TRAIN request (frames for the training ranks), else INFER.

        Blocks while every credit is taken and a request already waits, so the caller (the
        decode loop) runs at the ranks' pace and memory stays bounded.
        """
        tensors, op = ((images,), Op.INFER) if labels is None else ((images, labels), Op.TRAIN)
        rid = self._prefix + str(next(self._ids))
        msg = Message(op, rid, tensors, version, ttl=self.settings.request_timeout_s)
        # a training rank takes no CANCEL: a TRAIN re-sent elsewhere stays where it arrived
        self._apply(self.dispatcher.submit(time.monotonic(), rid, tag, msg,
                                           cancellable=op is Op.INFER))
        self._pump(wait=False)
        while self.dispatcher.queued() > 1:
            self._pump(wait=True)

    def pending(self) -> int:
        return self.dispatcher.pending()

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
        timeout_ms = 0
        if wait:  # until the dispatcher has something to do, at most 1 s
            timeout_ms = int(min(1.0, self.dispatcher.wake_in(time.monotonic())) * 1000) + 1
        for sock, _ in self._poller.poll(timeout_ms):
            self._drain(sock)
        self._apply(self.dispatcher.tick(time.monotonic()))

    def _apply(self, actions: list[Action]) -> None:
        """Carry out the dispatcher's actions, all of them (what it counts as sent must go out),
        then raise the first failure among them."""
        todo, failure = deque(actions), None
        while todo:
            action = todo.popleft()
            if isinstance(action, Send):
                todo.extend(self._send(action))
            elif isinstance(action, Cancel):
                cancel = Message(Op.CANCEL, f"cancel-{action.rid}", meta={"request": action.rid})
                try:
                    self._socks[action.rank].send_multipart(encode(cancel), zmq.NOBLOCK)
                except zmq.Again:
                    pass  # not connected: nothing of ours can be waiting there either
            elif isinstance(action, Deliver):
                msg = action.reply
                scores = np.array(msg.tensors[0]) if msg.tensors else np.zeros((0, 0), np.float32)
                self._done[action.request.tag] = Answer(scores, msg.model or "",
                                                        int(msg.meta.get("rank", -1)))
            elif isinstance(action, Fail):
                failure = failure or RankError(action.code, action.detail)
            elif isinstance(action, Refresh):
                newer = self._refresh()
                if newer is not None and newer.generation > self.generation:
                    self._connect(newer)
            elif isinstance(action, Unavailable):
                failure = failure or self._unavailable(action)
        if failure is not None:
            raise failure

    def _send(self, send: Send) -> list[Action]:
        req = send.request
        if req.attempts > 1:
            log.warning("re-sending request %s to %s (attempt %d): no answer within %.1fs",
                        req.rid, self._endpoints[send.rank], req.attempts, send.ttl)
        try:
            self._socks[send.rank].send_multipart(encode(req.payload), zmq.NOBLOCK, copy=False)
        except zmq.Again:  # not connected (yet): the others, this one again shortly
            return self.dispatcher.unreachable(time.monotonic(), send.rank, req.rid)
        return []

    def _drain(self, sock: zmq.Socket) -> None:
        rank, generation = self._rank_of[sock], self.generation
        while True:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            now = time.monotonic()
            try:
                msg = decode(frames, max_bytes=self.settings.max_reply_bytes)
            except ProtocolError as exc:
                log.error("unreadable reply from %s: %s", self._endpoints[rank], exc)
                self._apply(self.dispatcher.garbled(now, generation, rank))
                continue
            if msg.op is Op.ERROR:
                actions = self.dispatcher.refused(now, generation, rank, str(msg.id),
                                                  str(msg.meta.get("code")),
                                                  str(msg.meta.get("detail")))
            else:
                actions = self.dispatcher.answer(now, generation, rank, str(msg.id), msg)
            self._apply(actions)

    def _unavailable(self, gone: Unavailable) -> RanksUnavailable:
        hint = ("" if self._keys else "if the ranks bind a network address they require "
                "CURVE: set FRAMESTREAM_CLIENT_CURVE_SECRET and _CURVE_SERVER_KEY")
        if gone.expired_replies:
            hint = (f"the ranks answered {gone.expired_replies} times EXPIRED (each request "
                    f"waited there longer than its ttl): they are overloaded or stalled; "
                    f"raise FRAMESTREAM_CLIENT_REQUEST_TIMEOUT_S or add ranks")
        return RanksUnavailable("the executor", f"an answer from any rank of generation "
                                f"{gone.generation} or a new generation",
                                self.settings.outage_timeout_s,
                                "FRAMESTREAM_CLIENT_OUTAGE_TIMEOUT_S", detail=hint)


_clients: dict[str, RankClient] = {}  # one per Python worker process, reused across tasks


def cached_client(endpoints_json: str, directory: DirectoryRef | None,
                  settings: ClientSettings) -> RankClient:
    """The executor process's client for the ranks of the driver whose directory is
    ``directory`` (:mod:`etl.directory`; None: the set carried with the batch only).

    Spark reuses Python workers across tasks, so the sockets stay open between micro-batches.
    ``endpoints_json`` is the set the driver saw when the batch started: a newer generation than
    the client's means the ranks were relaunched. In the middle of a batch the client asks the
    driver's directory, never a file: executors share no disk with the driver.
    """
    import json

    known = EndpointSet.from_dict(json.loads(endpoints_json))
    key = directory.address if directory is not None else ""
    client = _clients.get(key)
    if client is None or client.settings != settings or client.directory != directory:
        if client is not None:
            client.close()
        client = RankClient(known, settings, directory=directory)
        _clients[key] = client
    elif known.generation > client.generation:
        client.reconnect(known)
    return client
