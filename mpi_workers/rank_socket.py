"""Bind a rank's ZeroMQ socket and publish every rank's endpoint from rank 0 (collective).

Shared by the serving ranks (:mod:`mpi_workers.serve`) and the training ranks fed over ZeroMQ
(:mod:`mpi_workers.feed`): each rank binds a ROUTER, rank 0 gathers the endpoints over MPI and
writes the set with the next generation number (see :mod:`mpi_workers.endpoints`).
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from mpi_workers.endpoints import EndpointSet, RankEndpoint, publish, read

if TYPE_CHECKING:
    import zmq
    from mpi4py.MPI import Intracomm

log = logging.getLogger(__name__)


def bind_router(ctx: "zmq.Context", bind: str, port: int, rank: int,
                max_message_bytes: int) -> tuple["zmq.Socket", str]:
    """A ROUTER on ``bind``:``port + rank`` (any free port when ``port`` is 0)."""
    import zmq

    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)  # oversized messages drop the peer
    if port:
        endpoint = f"tcp://{bind}:{port + rank}"
        sock.bind(endpoint)
    else:
        endpoint = f"tcp://{bind}:{sock.bind_to_random_port(f'tcp://{bind}')}"
    return sock, endpoint


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
