"""Data parallelism under real mpirun: after a step every rank holds the same weights, equal to a
single-process step on the combined batch (mpi_workers/train_check.py), for each backend."""

from __future__ import annotations

import importlib.util
import json

import pytest

from launcher.mpirun import run_mpi

pytestmark = pytest.mark.mpi
no_horovod = pytest.mark.skipif(importlib.util.find_spec("horovod") is None,
                                reason="horovod is not installed (make setup builds it; see "
                                       "$FRAMESTREAM_CACHE/logs/horovod.log)")


def _check(n: int, backend: str, *extra: str) -> dict:
    out = run_mpi(n, "mpi_workers.train_check", ["--backend", backend, *extra], timeout=120).stdout
    got = json.loads(out.strip().splitlines()[-1])
    assert got["backend"] == backend and got["world_size"] == n
    # The ranks started from different weights, so agreement below is the broadcast's doing,
    assert got["initial_spread_between_ranks"] > 1e-2
    # and the update is far above the tolerance, so "equal to single process" is not vacuous.
    assert got["max_update"] > 1e-3
    return got


@pytest.mark.parametrize("steps", [1, 3])
def test_torch_backend_equals_single_process_on_the_combined_batch(steps: int) -> None:
    got = _check(2, "torch", "--steps", str(steps))
    assert got["max_diff_between_ranks"] == 0.0
    assert got["max_diff_vs_single_process"] < 1e-5


def test_torch_backend_with_three_ranks() -> None:
    got = _check(3, "torch")
    assert got["max_diff_between_ranks"] == 0.0
    assert got["max_diff_vs_single_process"] < 1e-5


def test_without_gradient_averaging_the_check_fails() -> None:
    """Negative control: the check can tell when gradients are not averaged."""
    got = _check(2, "torch", "--no-sync")
    assert got["max_diff_between_ranks"] > 1e-4
    assert got["max_diff_vs_single_process"] > 1e-4


@pytest.mark.horovod
@no_horovod
@pytest.mark.parametrize("steps", [1, 3])
def test_horovod_backend_equals_single_process_on_the_combined_batch(steps: int) -> None:
    got = _check(2, "horovod", "--steps", str(steps))
    assert got["max_diff_between_ranks"] == 0.0
    assert got["max_diff_vs_single_process"] < 1e-5
