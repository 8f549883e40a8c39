"""Bind a rank's ZeroMQ socket and publish every rank's endpoint from rank 0 (collective).

Shared by the serving ranks (:mod:`mpi_workers.serve`) and the training ranks fed over ZeroMQ
(:mod:`mpi_workers.feed`): each rank binds a ROUTER, rank 0 gathers the endpoints over MPI and
writes the set with the next generation number (see :mod:`framestream.endpoints`).

The bind policy lives here too, so no rank can skip it: a loopback address may be plain ZeroMQ, any
other address needs CURVE keys (:mod:`framestream.security`) or an explicit ``insecure``.

A rank's memory for incoming messages is bounded per peer: ``ZMQ_MAXMSGSIZE`` (a larger message
drops the connection) times ``ZMQ_RCVHWM`` (messages queued per peer connection; past it ZeroMQ
stops reading that peer and TCP pushes back on the sender). Settings:
``FRAMESTREAM_SERVE_MAX_REQUEST_BYTES`` and ``FRAMESTREAM_SERVE_RCVHWM``.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from framestream.security import InsecureBind, PeerGuard, ServerKeys, is_loopback
from framestream.endpoints import EndpointSet, RankEndpoint, publish, read

if TYPE_CHECKING:
    import zmq
    from mpi4py.MPI import Intracomm

log = logging.getLogger(__name__)


@dataclass
class RankSocket:
    """A bound ROUTER, its endpoint and its door keeper (CURVE, connection counters)."""

    sock: "zmq.Socket"
    endpoint: str
    guard: PeerGuard

    def close(self) -> None:
        self.guard.close()
        self.sock.close(0)


def control_token_from_env() -> str | None:
    """The gang's control token (:data:`~framestream.wire.CONTROL_TOKEN_ENV`), taken out of
    this rank's environment so that nothing the rank starts inherits it; None when the ranks were
    started without one (then no message can stop them, only a signal)."""
    from framestream.wire import CONTROL_TOKEN_ENV

    return os.environ.pop(CONTROL_TOKEN_ENV, None) or None


DEFAULT_RCVHWM = 64  # messages queued per peer; clients keep <= credits_per_rank (<= 64) in flight


def bind_router(ctx: "zmq.Context", bind: str, port: int, rank: int, max_message_bytes: int,
                keys: ServerKeys | None = None, insecure: bool = False,
                counter: Any = None, rcvhwm: int = DEFAULT_RCVHWM) -> RankSocket:
    """A ROUTER on ``bind``:``port + rank`` (any free port when ``port`` is 0).

    ``keys``: CURVE server keys and the allowed client folder (see
    :func:`framestream.security.server_keys`). Without keys only a loopback ``bind`` is allowed,
    unless ``insecure``; else :class:`~framestream.security.InsecureBind`. ``counter``: a
    Prometheus counter with labels (rank, event) for the guard's connection events.
    """
    import zmq

    if keys is None and not insecure and not is_loopback(bind):
        raise InsecureBind("FRAMESTREAM_SERVE_BIND", bind, "--insecure")
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)  # an oversized message drops the peer
    sock.setsockopt(zmq.RCVHWM, rcvhwm)  # per peer: memory <= rcvhwm x max_message_bytes each
    guard = PeerGuard(ctx, sock, keys, counter, rank)  # CURVE options must precede bind
    try:
        if port:
            endpoint = f"tcp://{bind}:{port + rank}"
            sock.bind(endpoint)
        else:
            endpoint = f"tcp://{bind}:{sock.bind_to_random_port(f'tcp://{bind}')}"
    except BaseException:
        guard.close()
        sock.close(0)
        raise
    log.info("rank %d bound %s (%s)", rank, endpoint,
             "CURVE, %d allowed clients" % len(keys.clients) if keys else "plain ZeroMQ")
    return RankSocket(sock, endpoint, guard)


def publish_endpoints(comm: "Intracomm", endpoint: str, endpoints_file: str | Path,
                      device: str = "cpu", metrics_url: str = "", model_version: str | None = None,
                      generation: int | None = None, job: str = "") -> EndpointSet | None:
    """Gather every rank's endpoint at rank 0, which publishes them; returns the set on rank 0.

    ``generation`` defaults to the published one + 1.
    """
    me = RankEndpoint(comm.rank, endpoint, socket.gethostname(), os.getpid(), device, metrics_url)
    everyone = comm.gather(asdict(me), root=0)  # plain dicts: no custom classes across MPI
    if comm.rank != 0:
        return None
    if generation is None:
        previous = read(Path(endpoints_file))
        generation = previous.generation + 1 if previous else 1
    published = EndpointSet(generation, tuple(RankEndpoint(**r) for r in everyone), model_version,
                            time.time(), job or uuid.uuid4().hex)
    publish(Path(endpoints_file), published)
    log.info("published generation %d: %d ranks -> %s", generation, comm.size, endpoints_file)
    return published
