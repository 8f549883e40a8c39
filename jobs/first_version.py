"""A registry that serves something: when it serves nothing yet, train a first version.

Used by the demo and the benchmarks. It composes roles (models' registry, mpirun from the
launcher, the retraining job of mpi_workers), so it lives with the entry points.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from models.registry import Manifest, Registry

log = logging.getLogger(__name__)


def ensure_first_version(registry: "Registry | Path | str | None" = None, ranks: int = 2,
                         epochs: int = 2, timeout: float = 900.0,
                         extra_args: list[str] | tuple[str, ...] = ()) -> "Manifest":
    """The serving manifest; when the registry serves nothing yet, train one first.

    Runs the real job (``mpirun -n ranks python -m jobs.retrain --epochs E``) within ``timeout``
    seconds; raises :class:`~launcher.errors.RankFailed` or
    :class:`~framestream.errors.DeadlineExceeded` when it fails, and RegistryError when it ends
    without a serving version.
    """
    from launcher.mpirun import run_mpi
    from models.errors import RegistryError
    from models.registry import Registry

    reg = registry if isinstance(registry, Registry) else Registry(registry)
    if reg.serving() is None:
        log.info("registry %s serves nothing: training a first version on %d ranks", reg.root, ranks)
        out = run_mpi(ranks, "jobs.retrain", ["--registry", str(reg.root), "--epochs", str(epochs),
                                              "--no-progress", *extra_args], timeout=timeout)
        log.info("first version: %s", out.result)  # rank 0's result file
    version = reg.serving()
    if version is None:
        raise RegistryError(f"retraining ran but registry {reg.root} still serves nothing")
    return reg.manifest(version)
