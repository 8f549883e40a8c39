"""Chaos on the Spark side while a steady stream runs: kill -9 the whole driver and start it again
on the same checkpoint; kill -9 a Python worker while it runs a task (Spark retries the task)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.chaos.harness import ChaosStream, Profile, alive, assert_conserved, rank_pids, record
from tests.stream.helpers import wait_until

pytestmark = [pytest.mark.chaos, pytest.mark.spark, pytest.mark.kafka, pytest.mark.mpi,
              pytest.mark.slow]


def test_kill_the_driver_and_restart_it_on_its_checkpoint(kafka_bootstrap: str,
                                                          topics: dict[str, str], tmp_path: Path,
                                                          prof: Profile) -> None:
    run = ChaosStream(kafka_bootstrap, topics, tmp_path, prof)
    run.start()
    restarted = False
    try:
        run.produce()
        run.settle()
        ranks = rank_pids(run.endpoints)
        run.fault_start()
        run.kill()  # JVM, Python driver and workers; the ranks die with their driver
        wait_until(lambda: not alive(ranks), 60, "the orphaned ranks to exit with their driver")
        run.start()  # same checkpoint, same topics: Spark replays the unfinished micro-batch
        restarted = True
        run.fault_end()
        b = run.finish()
    finally:
        code = run.stop() if run.proc and run.proc.poll() is None else -1
    assert restarted and code == 0, run.log_tail()
    assert_conserved(b, run.total)  # a replayed offset got the very same answer
    record("driver_kill", "kill -9 the Spark driver (JVM, Python driver, workers; ranks die "
           "with it), then start it again on the same checkpoint", prof, b,
           restart_s=round(run.t1 - run.t0, 3))


def _python_workers(root: int) -> list[int]:
    """Spark's forked Python workers under spark-submit's JVM (children of pyspark.daemon)."""
    import psutil

    found = []
    for p in psutil.Process(root).children(recursive=True):
        try:
            if "pyspark.daemon" in " ".join(p.cmdline()) and \
                    "pyspark.daemon" in " ".join(p.parent().cmdline()):
                found.append(p.pid)
        except psutil.Error:
            continue
    return found


def _running(pids: list[int], within_s: float = 3.0) -> int | None:
    """A worker caught on the CPU (state R) within ``within_s``: one running a task."""
    import psutil

    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        for pid in pids:
            try:
                if psutil.Process(pid).status() == psutil.STATUS_RUNNING:
                    return pid
            except psutil.Error:
                continue
        time.sleep(0.01)  # sampling the workers' state
    return None


def test_kill_a_python_worker_mid_task(kafka_bootstrap: str, topics: dict[str, str],
                                       tmp_path: Path, prof: Profile) -> None:
    run = ChaosStream(kafka_bootstrap, topics, tmp_path, prof)
    run.start()
    log = run.logs[-1]
    kills: list[int] = []
    try:
        run.produce()
        run.settle()
        deadline = time.monotonic() + 90
        while "Lost task" not in log.read_text(errors="replace"):  # until a kill hit a task
            assert time.monotonic() < deadline, f"no task was lost after {len(kills)} kills"
            pid = _running(_python_workers(run.proc.pid))
            if pid is None:
                continue
            if not kills:
                run.fault_start()
            os.kill(pid, signal.SIGKILL)
            kills.append(pid)
            time.sleep(2.0)  # give Spark time to notice and log the lost task
        run.fault_end()
        b = run.finish()
    finally:
        code = run.stop()
    assert code == 0, run.log_tail()
    assert_conserved(b, run.total)
    assert run.stats()["rank_restarts"] == 0
    lost = [line for line in log.read_text(errors="replace").splitlines() if "Lost task" in line]
    record("python_worker_kill", "kill -9 a Spark Python worker while it runs a task "
           "(local[2,4]: Spark retries the task)", prof, b, workers_killed=len(kills),
           lost_tasks=len(lost), lost_task=lost[0][:300])
