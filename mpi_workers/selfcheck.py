"""``mpirun -n N python -m mpi_workers.selfcheck``: prove MPI and torch.distributed work.

Every rank contributes ``[rank + 1] * 4``; the sums come back through an MPI allreduce and a
torch.distributed (gloo) allreduce bootstrapped from MPI. Rank 0 prints one JSON line and writes it as its result file.
"""

from __future__ import annotations

import json
import socket
import sys

from framestream.run_files import write_result
from mpi_workers.dist import abort_on_error, init_torch_distributed, world


@abort_on_error
def main(argv: list[str] | None = None) -> None:
    import argparse

    import numpy as np
    import torch
    import torch.distributed as dist
    from mpi4py import MPI

    parser = argparse.ArgumentParser(prog="python -m mpi_workers.selfcheck")
    parser.add_argument("--fail-rank", type=int, default=None,
                        help="make this rank raise, to check that a failure ends the whole job")
    args = parser.parse_args(argv)
    comm = world()
    if args.fail_rank == comm.rank:
        raise RuntimeError("requested failure (--fail-rank)")
    mine = np.full(4, comm.rank + 1, dtype=np.float64)
    total = np.empty_like(mine)
    comm.Allreduce(mine, total, op=MPI.SUM)

    backend = init_torch_distributed(comm, backend="gloo")
    tensor = torch.full((4,), float(comm.rank + 1))
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    hosts = comm.gather(socket.gethostname(), root=0)
    dist.destroy_process_group()
    if comm.rank == 0:
        result = {"world_size": comm.size, "mpi_allreduce": total.tolist(),
                  "torch_allreduce": tensor.tolist(), "torch_backend": backend,
                  "hosts": hosts, "mpi": MPI.Get_library_version().strip("\x00").splitlines()[0]}
        write_result(result)  # for the launcher (framestream.run_files)
        print(json.dumps(result))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
