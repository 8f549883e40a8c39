"""MPI as the bootstrap of everything distributed inside the ranks.

``torch.distributed`` needs a rank, a world size and a rendezvous; MPI already knows the first two,
and rank 0 provides the third: it opens a ``TCPStore`` on a free port and broadcasts the address
with mpi4py, so no launcher variables (MASTER_ADDR, ...) are needed.

A rank that raises aborts the whole MPI job (:func:`abort_on_error`) instead of leaving the other
ranks blocked in a collective.

No pickle between ranks: mpi4py's lowercase collectives (``comm.gather``, ``bcast``,
``allgather``, ``allreduce`` on Python objects) serialize with pickle unless told otherwise;
:func:`world` swaps in msgpack once per process, so they carry plain values only (None, bool,
int, float, str, bytes, lists, dicts with str keys; a tuple arrives as a list) and a custom class
fails loudly at the sender instead of running code at the receiver.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import sys
import traceback
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from mpi4py.MPI import Intracomm

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])


_SERIALIZER = {"set": False}


def _mpi_dumps(obj: Any) -> bytes:
    import msgpack

    return msgpack.packb(obj, use_bin_type=True)


def _mpi_loads(data: Any) -> Any:
    import msgpack

    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def use_msgpack() -> None:
    """Make mpi4py serialize Python objects with msgpack instead of pickle (idempotent)."""
    from mpi4py import MPI

    if not _SERIALIZER["set"]:
        MPI.pickle.__init__(_mpi_dumps, _mpi_loads)
        _SERIALIZER["set"] = True


def world() -> "Intracomm":
    """MPI.COMM_WORLD, with msgpack as the object serializer (see the module doc)."""
    from mpi4py import MPI

    use_msgpack()
    return MPI.COMM_WORLD


def local_rank(comm: "Intracomm | None" = None) -> int:
    """This rank's index among the ranks on its own host (for ``cuda:<local rank>``)."""
    env = os.environ.get("OMPI_COMM_WORLD_LOCAL_RANK")
    if env is not None:
        return int(env)
    comm = comm or world()
    from mpi4py import MPI

    return comm.Split_type(MPI.COMM_TYPE_SHARED).rank


def rendezvous_host(comm: "Intracomm") -> str:
    """127.0.0.1 when every rank is on one host, else an address of rank 0's host (collective)."""
    hosts = comm.allgather(socket.gethostname())
    if len(set(hosts)) == 1:
        return "127.0.0.1"
    override = os.environ.get("FRAMESTREAM_MPI_RENDEZVOUS_HOST")
    return override or socket.gethostbyname(hosts[0])


def init_torch_distributed(comm: "Intracomm | None" = None, backend: str | None = None,
                           timeout_s: float = 60.0) -> str:
    """Initialise the default torch process group from MPI; returns the backend used.

    ``backend`` defaults to nccl when CUDA is available, else gloo.
    """
    import torch
    import torch.distributed as dist

    comm = comm or world()
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    host = rendezvous_host(comm)  # a collective: every rank calls it
    timeout = timedelta(seconds=timeout_s)
    if comm.rank == 0:
        store = dist.TCPStore(host, 0, comm.size, is_master=True, timeout=timeout,
                              wait_for_workers=False)
        addr = (host, store.port)
    else:
        addr = None
    addr = comm.bcast(addr, root=0)
    if comm.rank != 0:
        store = dist.TCPStore(addr[0], addr[1], comm.size, is_master=False, timeout=timeout)
    dist.init_process_group(backend, store=store, rank=comm.rank, world_size=comm.size,
                            timeout=timeout)
    log.info("torch.distributed %s up: rank %d/%d via %s:%d", backend, comm.rank, comm.size, *addr)
    return backend


def abort_on_error(fn: F) -> F:
    """Wrap a rank's main: an exception is written to this rank's error file for the launcher
    (:mod:`framestream.run_files`) and printed with the rank and host, then MPI_Abort ends the
    whole job with status 1, so no other rank hangs waiting for this one."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SystemExit:
            raise
        except BaseException as exc:
            from framestream.run_files import write_error

            comm = world()
            write_error(exc, comm.rank)  # the launcher's report (framestream.run_files)
            sys.stderr.write(f"[rank {comm.rank} on {socket.gethostname()} pid {os.getpid()}] "
                             f"failed:\n{traceback.format_exc()}")
            sys.stderr.flush()
            comm.Abort(1)
            raise

    return wrapper  # type: ignore[return-value]
