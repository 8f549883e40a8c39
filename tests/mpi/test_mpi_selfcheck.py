"""Real mpirun: MPI allreduce and torch.distributed bootstrapped from MPI, across 2 ranks."""

from __future__ import annotations

import json

import pytest

from launcher.errors import RankFailed
from launcher.mpirun import mpirun_cmd, run_mpi

pytestmark = pytest.mark.mpi


def test_two_ranks_allreduce_with_mpi_and_torch_distributed() -> None:
    out = run_mpi(2, "mpi_workers.selfcheck", timeout=120)
    got = out.result  # rank 0's result file, not its stdout
    assert got is not None and json.loads(out.stdout.strip().splitlines()[-1]) == got
    assert got["world_size"] == 2
    assert got["mpi_allreduce"] == [3.0, 3.0, 3.0, 3.0]  # (0+1) + (1+1) per element
    assert got["torch_allreduce"] == [3.0, 3.0, 3.0, 3.0]
    assert got["torch_backend"] == "gloo"


def test_three_ranks_oversubscribe_two_cores() -> None:
    got = run_mpi(3, "mpi_workers.selfcheck", timeout=120).result
    assert got["mpi_allreduce"] == [6.0] * 4 and got["torch_allreduce"] == [6.0] * 4


def test_a_failing_rank_fails_the_job_with_its_traceback() -> None:
    with pytest.raises(RankFailed) as err:
        run_mpi(2, "mpi_workers.selfcheck", ["--fail-rank", "1"], timeout=120)
    f = err.value  # from rank 1's error file: who, where, what, and its traceback
    assert (f.rank, f.message) == (1, "RuntimeError: requested failure (--fail-rank)")
    assert f.host and f.pid and f.exit_code != 0
    assert "Traceback" in f.callstack and "selfcheck.py" in f.callstack
    assert str(f).startswith(f"rank 1 on {f.host} (pid {f.pid}) failed with exit code")
    assert "requested failure" in str(f)


def test_mpirun_cmd_oversubscribes_only_past_the_cores() -> None:
    import os

    cores = os.cpu_count() or 1
    assert "--oversubscribe" not in mpirun_cmd(cores, "m")
    assert "--oversubscribe" in mpirun_cmd(cores + 1, "m")
    assert mpirun_cmd(2, "m", ["--x"])[-3:] == ["-m", "m", "--x"]


def test_a_reused_run_folder_never_reports_the_last_launchs_failure(tmp_path) -> None:
    from framestream import run_files
    from launcher.mpirun import start_ranks

    failing = start_ranks("mpi_workers.selfcheck", ["--fail-rank", "0"], n=2, run_dir=tmp_path)
    try:
        code = failing.wait(120)
    finally:
        failing.stop()
    assert code != 0 and failing.failure(code).rank == 0
    job = start_ranks("mpi_workers.selfcheck", n=2, run_dir=tmp_path)
    try:
        assert job.wait(120) == 0
    finally:
        job.stop()
    assert job.result()["world_size"] == 2 and run_files.read_errors(tmp_path) == []
