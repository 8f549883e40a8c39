"""Real mpirun: MPI allreduce and torch.distributed bootstrapped from MPI, across 2 ranks."""

from __future__ import annotations

import json

import pytest

from launcher.errors import RankFailed
from launcher.mpirun import mpirun_cmd, run_mpi

pytestmark = pytest.mark.mpi


def test_two_ranks_allreduce_with_mpi_and_torch_distributed() -> None:
    out = run_mpi(2, "mpi_workers.selfcheck", timeout=120).stdout
    got = json.loads(out.strip().splitlines()[-1])
    assert got["world_size"] == 2
    assert got["mpi_allreduce"] == [3.0, 3.0, 3.0, 3.0]  # (0+1) + (1+1) per element
    assert got["torch_allreduce"] == [3.0, 3.0, 3.0, 3.0]
    assert got["torch_backend"] == "gloo"


def test_three_ranks_oversubscribe_two_cores() -> None:
    out = run_mpi(3, "mpi_workers.selfcheck", timeout=120).stdout
    got = json.loads(out.strip().splitlines()[-1])
    assert got["mpi_allreduce"] == [6.0] * 4 and got["torch_allreduce"] == [6.0] * 4


def test_a_failing_rank_fails_the_job_with_its_traceback() -> None:
    with pytest.raises(RankFailed) as err:
        run_mpi(2, "mpi_workers.selfcheck", ["--fail-rank", "1"], timeout=120)
    assert "rank 1" in str(err.value)
    assert "requested failure" in str(err.value)


def test_mpirun_cmd_oversubscribes_only_past_the_cores() -> None:
    import os

    cores = os.cpu_count() or 1
    assert "--oversubscribe" not in mpirun_cmd(cores, "m")
    assert "--oversubscribe" in mpirun_cmd(cores + 1, "m")
    assert mpirun_cmd(2, "m", ["--x"])[-3:] == ["-m", "m", "--x"]
