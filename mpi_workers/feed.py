"""Training data fed over ZeroMQ (LINE's path): Spark executors push labeled frames to the ranks.

Each training rank binds a ROUTER and rank 0 publishes the endpoints (as serving ranks do). The
executors of a Spark job decode labeled frames with the same ETL code the stream uses and send
``TRAIN`` messages (uint8 NHWC frames + int64 labels); a rank checks and keeps them and answers
``ACK``. When the Spark job is done, the driver sends ``END`` to every rank; then the ranks train
on what each received (:mod:`mpi_workers.train`).

As on a serving rank, nothing a message contains ends the receiver: any message it cannot use, for
any reason, is answered ERROR with a code, counted (:attr:`FeedReceiver.refused`) and logged.
``END`` is obeyed only with the gang's control token, which the driver that started mpirun holds
(``FRAMESTREAM_CONTROL_TOKEN`` in the ranks' environment alone; see :mod:`etl.feed`): an END from
an executor or a stranger is refused ``FORBIDDEN`` and the feed goes on.

The sender re-sends a TRAIN whose ACK did not come within its deadline (the same dispatcher as
for inference, :mod:`framestream.dispatch`, without CANCEL: a training rank keeps what arrived).
When the re-send comes back here, the same peer's request id is ACKed again and not kept twice,
so no frame is trained on twice for it (:attr:`FeedReceiver.duplicates`).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from framestream.errors import DeadlineExceeded
from framestream.wire import Message, Op, ProtocolError, control_allowed, decode, encode
from mpi_workers.batcher import peer_of

if TYPE_CHECKING:
    import zmq
    from mpi4py.MPI import Intracomm

    from framestream.security import PeerGuard
    from models.spec import PreprocessSpec

log = logging.getLogger(__name__)


class FeedReceiver:
    """Collects TRAIN batches until END; bounded by ``max_frames`` and an idle deadline."""

    def __init__(self, sock: "zmq.Socket", spec: "PreprocessSpec", rank: int, max_frames: int,
                 max_request_bytes: int, guard: "PeerGuard | None" = None,
                 control_token: str | None = None) -> None:
        self.sock, self.spec, self.rank, self.guard = sock, spec, rank, guard
        self.control_token = control_token
        self.refused: Counter[str] = Counter()  # ERROR replies by code
        self.max_frames, self.max_request_bytes = max_frames, max_request_bytes
        self.images: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.frames = 0
        self.ended = False
        self.duplicates = 0  # TRAIN messages ACKed again, not kept twice
        self._kept: set[tuple[bytes, int | str]] = set()  # (peer, request id) of kept frames

    def _reply(self, ident: Any, msg: Message) -> None:
        self.sock.send_multipart([ident, *encode(msg)], copy=False)

    def _check(self, msg: Message) -> str | None:
        if len(msg.tensors) != 2:
            return f"TRAIN takes 2 tensors (frames, labels), got {len(msg.tensors)}"
        x, y = msg.tensors
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != self.spec.shape:
            return f"frames must be uint8 [N, {', '.join(map(str, self.spec.shape))}], got " \
                   f"{x.dtype}{list(x.shape)}"
        if y.dtype != np.int64 or y.shape != (x.shape[0],):
            return f"labels must be int64 [{x.shape[0]}], got {y.dtype}{list(y.shape)}"
        classes = len(self.spec.class_names) or None
        if len(y) and (y.min() < 0 or (classes and y.max() >= classes)):
            return f"labels must be in 0..{(classes or 0) - 1}, got {y.min()}..{y.max()}"
        if self.frames + len(y) > self.max_frames:
            return (f"this rank holds at most {self.max_frames} frames "
                    f"(FRAMESTREAM_TRAIN_FEED_MAX_FRAMES)")
        return None

    def _refuse(self, ident: Any, msg_id: Any, code: str, detail: str) -> None:
        log.warning("training rank %d: refused a message: %s: %s", self.rank, code, detail[:300])
        self.refused[code] += 1
        self._reply(ident, Message(Op.ERROR, msg_id, meta={"code": code, "detail": detail}))

    def handle(self, ident: Any, frames: list[Any]) -> None:
        """One message off the socket: whatever happens while handling it ends in a reply."""
        try:
            msg = decode(frames, max_bytes=self.max_request_bytes)
        except ProtocolError as exc:
            self._refuse(ident, 0, exc.code, exc.detail)
            return
        if self.guard is not None and not self.guard.admits(ident):
            self._refuse(ident, msg.id, "REVOKED", "this client's key is no longer in the rank's "
                         "allowed set")
            return
        try:
            self._dispatch(ident, msg)
        except Exception as exc:  # noqa: BLE001 - the rule: a message never ends the rank
            log.exception("training rank %d: handling %s %r failed", self.rank, msg.op.value,
                          msg.id)
            self._refuse(ident, msg.id, "INTERNAL", f"{type(exc).__name__}: {exc}"[:500])

    def _dispatch(self, ident: Any, msg: Message) -> None:
        if msg.op is Op.TRAIN:
            key = (peer_of(ident), msg.id)
            if key in self._kept:  # a re-send of what this rank holds already
                self.duplicates += 1
                self._reply(ident, msg.reply(Op.ACK, rank=self.rank, frames=self.frames))
                return
            problem = self._check(msg)
            if problem:
                self._refuse(ident, msg.id, "BAD_TRAIN", problem)
                return
            self.images.append(np.array(msg.tensors[0]))  # copies off the socket buffers
            self.labels.append(np.array(msg.tensors[1]))
            self.frames += len(msg.tensors[1])
            if len(msg.tensors[1]):  # bounded by max_frames: an empty TRAIN needs no memory
                self._kept.add(key)
            self._reply(ident, msg.reply(Op.ACK, rank=self.rank, frames=self.frames))
        elif msg.op is Op.END:
            if not control_allowed(msg, self.control_token):
                self._refuse(ident, msg.id, "FORBIDDEN", "END is taken only from the driver that "
                             "started the training ranks, with the gang's control token")
                return
            self.ended = True
            self._reply(ident, msg.reply(Op.ACK, rank=self.rank, frames=self.frames))
        elif msg.op is Op.PING:
            self._reply(ident, msg.reply(Op.PONG, rank=self.rank, frames=self.frames))
        else:
            self._refuse(ident, msg.id, "BAD_OP", f"a training rank does not take {msg.op.value}")

    def run(self, idle_timeout_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Serve until END; DeadlineExceeded if nothing arrives for ``idle_timeout_s``."""
        import zmq

        last = time.monotonic()
        while not self.ended:
            if self.guard is not None:
                self.guard.poll()
            if not self.sock.poll(200):
                if time.monotonic() - last > idle_timeout_s:
                    raise DeadlineExceeded(f"training rank {self.rank}", "TRAIN data or END from "
                                           "the feeding Spark job", idle_timeout_s,
                                           "--feed-timeout")
                continue
            while True:
                try:
                    ident, *frames = self.sock.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                self.handle(ident, frames)
            last = time.monotonic()
        h, w, c = self.spec.shape
        images = np.concatenate(self.images) if self.images else np.zeros((0, h, w, c), np.uint8)
        labels = np.concatenate(self.labels) if self.labels else np.zeros(0, np.int64)
        return images, labels


def receive(comm: "Intracomm", spec: "PreprocessSpec", endpoints_file: str | Path,
            bind: str | None = None, max_frames: int = 1_000_000, idle_timeout_s: float = 600.0,
            max_request_bytes: int = 256 * 1024 * 1024) -> tuple[np.ndarray, np.ndarray]:
    """Collective: bind, publish the endpoints, collect this rank's share of the fed data.

    Training ranks take the serving ranks' address and CURVE settings (``FRAMESTREAM_SERVE_BIND``,
    ``_CURVE_SECRET``, ``_CURVE_CLIENTS``, ``_INSECURE``): the same bind policy applies.
    """
    import zmq

    from framestream.security import server_keys
    from mpi_workers.rank_socket import bind_router, control_token_from_env, publish_endpoints
    from mpi_workers.serve import ServeSettings

    s = ServeSettings.load(bind=bind)
    keys = server_keys(s.bind, s.curve_secret, s.curve_clients, s.insecure)
    token = control_token_from_env()
    ctx = zmq.Context()
    bound = bind_router(ctx, s.bind, 0, comm.rank, max_request_bytes, keys, s.insecure,
                        rcvhwm=s.rcvhwm)
    try:
        publish_endpoints(comm, bound.endpoint, endpoints_file)
        receiver = FeedReceiver(bound.sock, spec, comm.rank, max_frames, max_request_bytes,
                                guard=bound.guard, control_token=token)
        images, labels = receiver.run(idle_timeout_s)
    finally:
        bound.close()
        ctx.term()
    log.info("rank %d received %d labeled frames (refused: %s)", comm.rank, len(labels),
             dict(receiver.refused) or "none")
    return images, labels
