"""The serving loop of one rank: drain the socket, batch, run the model, reply.

Kept apart from process start-up (:mod:`mpi_workers.serve`) so it can be driven in one process by
tests with a real ZeroMQ socket.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from mpi_workers.batcher import Pending, late, peer_of, plan, withdraw
from mpi_workers.inference import forward
from framestream.wire import Message, Op, ProtocolError, control_allowed, decode, encode

if TYPE_CHECKING:
    import zmq

    from framestream.security import PeerGuard
    from mpi_workers.metrics import RankMetrics
    from mpi_workers.model_cache import ModelCache

log = logging.getLogger(__name__)

MAX_DRAIN = 256  # messages taken off the socket per loop, so replies are not held back forever


class RankServer:
    """One rank's loop. Nothing a message contains ends it: every message it cannot use, for any
    reason (decode, checks, an unknown model, even a bug in handling it), gets an ERROR reply with
    a code, is counted (``framestream_rank_refused_total{code}``) and logged, and the loop goes on.
    What does end it is a failure of the rank itself: the model's forward pass failing on a batch
    that passed every check (a device error, memory, broken weights) propagates, the rank exits
    non-zero and the supervisor relaunches the gang; the clients re-send what was in flight.

    ``control_token``: SHUTDOWN is obeyed only when it carries this token (see
    :func:`framestream.wire.control_allowed`); ``None`` (no token given to the ranks) means
    no message can stop the rank, only a signal.
    """

    def __init__(self, sock: "zmq.Socket", models: "ModelCache", metrics: "RankMetrics", rank: int,
                 max_batch: int, refresh_s: float, max_request_bytes: int,
                 guard: "PeerGuard | None" = None, control_token: str | None = None) -> None:
        self.sock = sock
        self.guard = guard          # CURVE door keeper: counts refused and broken peers
        self.models = models
        self.metrics = metrics
        self.rank = rank
        self.max_batch = max_batch
        self.refresh_s = refresh_s
        self.max_request_bytes = max_request_bytes
        self.control_token = control_token
        self.frames_served = 0
        self.max_queue = 0          # most requests drained in one loop (bounded by client credits)
        self._running = True
        self._next_refresh = 0.0
        self._pending: list[Pending] = []

    def stop(self) -> None:
        self._running = False

    # -- loop -------------------------------------------------------------------------------------
    def run(self) -> None:
        import zmq

        while self._running:
            self._maybe_refresh()
            if self.guard is not None:
                self.guard.poll()
            if not self.sock.poll(100):
                continue
            self._pending = pending = []
            received: dict[int, float] = {}
            for _ in range(MAX_DRAIN):
                try:
                    ident, *frames = self.sock.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                p = self._handle(ident, frames)
                if p is not None:
                    received[id(p)] = time.monotonic()
                    pending.append(p)
            self.metrics.queue_depth.set(len(pending))
            self.max_queue = max(self.max_queue, len(pending))
            work = plan(pending, self.max_batch, time.monotonic())
            self._expired(work.expired)
            for _ in work.superseded:  # the same peer sent the same id again: answered once
                self.metrics.count("INFER", "superseded")
            for batch in work.batches:
                batch, missed = late(batch, time.monotonic())
                self._expired(missed)
                if batch:
                    self._infer(batch, received)
            self._pending = []

    def _expired(self, late: list[Pending]) -> None:
        for p in late:
            self._reply(p.ident, p.payload.error("EXPIRED", "its ttl ran out before the rank got "
                                                            "to it"), "INFER", "expired")

    def _maybe_refresh(self) -> None:
        now = time.monotonic()
        if now < self._next_refresh:
            return
        self._next_refresh = now + self.refresh_s
        try:
            new = self.models.refresh()
        except Exception as exc:  # a bad promotion must not stop serving the current version
            log.error("rank %d: cannot switch to the promoted version: %s", self.rank, exc)
            self._next_refresh = now + max(self.refresh_s, 10.0)
            return
        if new:
            log.info("rank %d: serving %s by default from now on", self.rank, new)
            self.metrics.model.info({"version": new})

    # -- messages ---------------------------------------------------------------------------------
    def _reply(self, ident: Any, msg: Message, op: str, outcome: str) -> None:
        self.sock.send_multipart([ident, *encode(msg)], copy=False)
        self.metrics.count(op, outcome)

    def _refuse(self, ident: Any, msg_id: Any, op: str, code: str, detail: str) -> None:
        log.warning("rank %d: refused a %s message: %s: %s", self.rank, op, code, detail[:300])
        self.metrics.refuse(code)
        self._reply(ident, Message(Op.ERROR, msg_id, meta={"code": code, "detail": detail}), op,
                    "error")

    def _handle(self, ident: Any, frames: list[Any]) -> Pending | None:
        """One message off the socket: whatever happens while handling it ends in a reply."""
        try:
            msg = decode(frames, max_bytes=self.max_request_bytes)
        except ProtocolError as exc:
            self._refuse(ident, 0, "MALFORMED", exc.code, exc.detail)
            return None
        if self.guard is not None and not self.guard.admits(ident):
            self._refuse(ident, msg.id, msg.op.value, "REVOKED", "this client's key is no "
                         "longer in the rank's allowed set")
            return None
        try:
            return self._accept(ident, msg)
        except Exception as exc:  # noqa: BLE001 - the rule: a message never ends the rank
            log.exception("rank %d: handling %s %r failed", self.rank, msg.op.value, msg.id)
            self._refuse(ident, msg.id, msg.op.value, "INTERNAL", f"{type(exc).__name__}: {exc}"
                         [:500])
            return None

    def _accept(self, ident: Any, msg: Message) -> Pending | None:
        """Answer control ops and errors at once; return INFER work."""
        if msg.op is Op.PING:
            self._reply(ident, msg.reply(Op.PONG, model=self.models.default_version,
                                         rank=self.rank, frames_served=self.frames_served),
                        "PING", "ok")
            return None
        if msg.op is Op.SHUTDOWN:
            if not control_allowed(msg, self.control_token):
                self._refuse(ident, msg.id, "SHUTDOWN", "FORBIDDEN", "SHUTDOWN is taken only from "
                             "the launcher, with the gang's control token")
                return None
            self._reply(ident, msg.reply(Op.ACK, rank=self.rank), "SHUTDOWN", "ok")
            self.stop()
            return None
        if msg.op is Op.CANCEL:
            self._cancel(ident, msg)
            return None
        if msg.op is not Op.INFER:
            self._refuse(ident, msg.id, msg.op.value, "BAD_OP",
                         f"a serving rank does not take {msg.op.value}")
            return None
        try:
            model = self.models.get(msg.model)
        except Exception as exc:  # unknown version, checksum mismatch: the client must know
            self._refuse(ident, msg.id, "INFER", "MODEL_UNAVAILABLE",
                         f"{type(exc).__name__}: {exc}")
            return None
        if len(msg.tensors) != 1 or msg.tensors[0].dtype != np.uint8 \
                or msg.tensors[0].ndim != 4 or msg.tensors[0].shape[1:] != model.spec.shape:
            shapes = [f"{t.dtype}{list(t.shape)}" for t in msg.tensors]
            self._refuse(ident, msg.id, "INFER", "BAD_SHAPE", f"model {model.version} takes one "
                         f"uint8 [N, {', '.join(map(str, model.spec.shape))}] tensor, got {shapes}")
            return None
        deadline = None if msg.ttl is None else time.monotonic() + msg.ttl  # this rank's clock
        return Pending(ident, msg.id, msg.tensors[0].shape[0], model.version, deadline, msg)

    def _cancel(self, ident: Any, msg: Message) -> None:
        """Withdraw a request of the same peer that is still waiting here (its sender re-sent it
        elsewhere after its own deadline), so it is not computed twice."""
        gone = withdraw(self._pending, peer_of(ident), msg.meta.get("request"))  # the loop's list
        if gone:
            self.metrics.count("INFER", "cancelled")
        self._reply(ident, msg.reply(Op.ACK, rank=self.rank, cancelled=gone), "CANCEL",
                    "ok" if gone else "unknown")

    # -- inference --------------------------------------------------------------------------------
    def _infer(self, batch: list[Pending], received: dict[int, float]) -> None:
        model = self.models.get(batch[0].version)
        images = np.concatenate([p.payload.tensors[0] for p in batch]) if len(batch) > 1 \
            else np.array(batch[0].payload.tensors[0])  # a writable copy off the socket buffer
        scores = forward(model, images, self.max_batch)
        self.metrics.batch_frames.observe(len(images))
        self.frames_served += len(images)  # counted before the replies go out
        self.metrics.frames.inc(len(images))
        start = 0
        now = time.monotonic()
        for p in batch:
            part = scores[start:start + p.frames]
            start += p.frames
            self._reply(p.ident, p.payload.reply(Op.RESULT, [part], model=model.version,
                                                 rank=self.rank, batch_frames=len(images)),
                        "INFER", "ok")
            self.metrics.latency.observe(now - received.get(id(p), now))
