"""Chaos on the ranks while a steady stream runs: kill -9 one rank, kill -9 every rank, SIGSTOP a
rank for longer than the request deadline. Every frame is still answered exactly once in content."""

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


@pytest.mark.parametrize("which", ["one", "all"])
def test_kill_ranks(which: str, kafka_bootstrap: str, topics: dict[str, str], tmp_path: Path,
                    prof: Profile) -> None:
    run = ChaosStream(kafka_bootstrap, topics, tmp_path, prof)
    run.start()
    try:
        run.produce()
        run.settle()
        victims = [run.ranks()[1]["pid"]] if which == "one" else rank_pids(run.endpoints)
        run.fault_start()
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        run.fault_end()
        wait_until(lambda: run.generation() >= 2, 120, "the relaunched ranks")
        relaunched = time.time() - run.t0
        b = run.finish()
    finally:
        code = run.stop()
    assert code == 0, run.log_tail()
    assert not alive(victims)
    assert_conserved(b, run.total)
    assert run.stats()["rank_restarts"] == 1  # one relaunch of the gang, however many died
    key, what = (("rank_kill", "kill -9 one of 2 serving ranks") if which == "one" else
                 ("all_ranks_kill", "kill -9 both serving ranks at once"))
    record(key, what, prof, b, relaunch_s=round(relaunched, 3), restarts=1)


def test_sigstop_a_rank_past_the_request_deadline(kafka_bootstrap: str, topics: dict[str, str],
                                                  tmp_path: Path, prof: Profile) -> None:
    assert prof.stop_hold_s > prof.request_timeout_s
    run = ChaosStream(kafka_bootstrap, topics, tmp_path, prof)
    run.start()
    try:
        run.produce()
        run.settle()
        victim = run.ranks()[1]["pid"]
        run.fault_start()
        os.kill(victim, signal.SIGSTOP)
        try:
            time.sleep(prof.stop_hold_s)  # the fault's stated duration
        finally:
            os.kill(victim, signal.SIGCONT)
        run.fault_end()
        b = run.finish()
    finally:
        code = run.stop()
    assert code == 0, run.log_tail()
    assert_conserved(b, run.total)
    stats = run.stats()
    assert stats["rank_restarts"] == 0  # stopped is not dead: nothing was relaunched
    assert run.generation() == 1
    record("rank_sigstop", f"SIGSTOP one rank for {prof.stop_hold_s:g} s (request deadline "
           f"{prof.request_timeout_s:g} s), then SIGCONT", prof, b, hold_s=prof.stop_hold_s,
           restarts=0)
