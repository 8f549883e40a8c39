"""``mpirun -n N python jobs/retrain.py [flags]`` (or ``python -m jobs.retrain``): data-parallel
retraining on MPI ranks; rank 0 publishes a registry version and prints one JSON line.

The logic lives in :mod:`mpi_workers.train` (flags: ``--help``); this file only sets up logging
(rank 0 at INFO, the other ranks at WARNING). The packages come from the installed project
(``make setup`` runs ``pip install -e .``), also when it is run by path; installed, it is the
``framestream-retrain`` command (``mpirun -n N .venv/bin/framestream-retrain``).
"""

from __future__ import annotations

import os
import sys

from framestream.logs import setup_logging
from mpi_workers.backends import yield_when_idle
from mpi_workers.train import main


def run(argv: list[str] | None = None) -> int:
    rank = int(os.environ.get("OMPI_COMM_WORLD_RANK", "0"))
    setup_logging(None if rank == 0 else "WARNING")
    yield_when_idle()  # before MPI starts (mpi4py is imported on first use)
    return main(argv)


if __name__ == "__main__":
    sys.exit(run())
