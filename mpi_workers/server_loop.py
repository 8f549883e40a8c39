"""The serving loop of one rank: drain the socket, batch, run the model, reply.

Kept apart from process start-up (:mod:`mpi_workers.serve`) so it can be driven in one process by
tests with a real ZeroMQ socket.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from mpi_workers.batcher import Pending, plan
from mpi_workers.inference import forward
from mpi_workers.protocol import Message, Op, ProtocolError, decode, encode

if TYPE_CHECKING:
    import zmq

    from framestream.security import PeerGuard
    from mpi_workers.metrics import RankMetrics
    from mpi_workers.model_cache import ModelCache

log = logging.getLogger(__name__)

MAX_DRAIN = 256  # messages taken off the socket per loop, so replies are not held back forever


class RankServer:
    def __init__(self, sock: "zmq.Socket", models: "ModelCache", metrics: "RankMetrics", rank: int,
                 max_batch: int, refresh_s: float, max_request_bytes: int,
                 guard: "PeerGuard | None" = None) -> None:
        self.sock = sock
        self.guard = guard          # CURVE door keeper: counts refused and broken peers
        self.models = models
        self.metrics = metrics
        self.rank = rank
        self.max_batch = max_batch
        self.refresh_s = refresh_s
        self.max_request_bytes = max_request_bytes
        self.frames_served = 0
        self.max_queue = 0          # most requests drained in one loop (bounded by client credits)
        self._running = True
        self._next_refresh = 0.0

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
            pending: list[Pending] = []
            received: dict[int, float] = {}
            for _ in range(MAX_DRAIN):
                try:
                    ident, *frames = self.sock.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                p = self._accept(ident, frames)
                if p is not None:
                    received[id(p)] = time.monotonic()
                    pending.append(p)
            self.metrics.queue_depth.set(len(pending))
            self.max_queue = max(self.max_queue, len(pending))
            work = plan(pending, self.max_batch, time.time())
            for p in work.expired:
                self._reply(p.ident, p.payload.error("EXPIRED", "deadline passed before the rank "
                                                               "got to it"), "INFER", "expired")
            for batch in work.batches:
                self._infer(batch, received)

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

    def _accept(self, ident: Any, frames: list[Any]) -> Pending | None:
        """Decode one request; answer control ops and errors at once; return INFER work."""
        try:
            msg = decode(frames, max_bytes=self.max_request_bytes)
        except ProtocolError as exc:
            log.warning("rank %d: malformed message: %s", self.rank, exc)
            self._reply(ident, Message(Op.ERROR, 0, meta={"code": exc.code, "detail": exc.detail}),
                        "MALFORMED", "error")
            return None
        if msg.op is Op.PING:
            self._reply(ident, msg.reply(Op.PONG, model=self.models.default_version,
                                         rank=self.rank, frames_served=self.frames_served),
                        "PING", "ok")
            return None
        if msg.op is Op.SHUTDOWN:
            self._reply(ident, msg.reply(Op.ACK, rank=self.rank), "SHUTDOWN", "ok")
            self.stop()
            return None
        if msg.op is not Op.INFER:
            self._reply(ident, msg.error("BAD_OP", f"a serving rank does not take {msg.op.value}"),
                        msg.op.value, "error")
            return None
        try:
            model = self.models.get(msg.model)
        except Exception as exc:  # unknown version, checksum mismatch: the client must know
            self._reply(ident, msg.error("MODEL_UNAVAILABLE", f"{type(exc).__name__}: {exc}"),
                        "INFER", "error")
            return None
        if len(msg.tensors) != 1 or msg.tensors[0].dtype != np.uint8 \
                or msg.tensors[0].ndim != 4 or msg.tensors[0].shape[1:] != model.spec.shape:
            shapes = [f"{t.dtype}{list(t.shape)}" for t in msg.tensors]
            self._reply(ident, msg.error("BAD_SHAPE", f"model {model.version} takes one uint8 "
                                         f"[N, {', '.join(map(str, model.spec.shape))}] tensor, "
                                         f"got {shapes}"), "INFER", "error")
            return None
        return Pending(ident, msg.id, msg.tensors[0].shape[0], model.version, msg.deadline, msg)

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
