"""Real mpirun serving ranks under the supervisor: serve, die, come back as a new generation."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from etl.client import ClientSettings, RankClient
from launcher.gang import ServingGang
from launcher.mpirun import mpirun_notice
from launcher.policy import State, SupervisionPolicy
from framestream import endpoints

pytestmark = [pytest.mark.mpi, pytest.mark.slow]
VERSION = "random-fashion_cnn"


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.1)  # polling another process's state, bounded by the deadline


def test_gang_serves_and_is_relaunched_after_a_rank_is_killed(tmp_path: Path) -> None:
    ep_file = tmp_path / "endpoints.json"
    gang = ServingGang(2, ["--version", VERSION, "--threads", "1"], ep_file, tmp_path / "logs",
                       SupervisionPolicy(max_restarts=2, backoff_s=0.2), start_timeout_s=90)
    client = None
    try:
        first = gang.start()
        assert first.generation == 1 and len(first.ranks) == 2
        client = RankClient(first, ClientSettings(chunk_frames=64, request_timeout_s=5),
                            refresh=lambda: endpoints.read(ep_file))
        images = np.random.default_rng(0).integers(0, 256, (512, 28, 28, 1), dtype=np.uint8)
        before, _ = client.infer(images, VERSION)

        victim = first.ranks[1]
        os.kill(victim.pid, signal.SIGKILL)
        _wait(lambda: gang.generation == 2 and gang.policy.state is State.RUNNING, 90,
              "the supervisor to relaunch the ranks as generation 2")
        assert gang.restarts == 1 and endpoints.read(ep_file).generation == 2
        report = gang.reports[0]
        assert report.rank == 1 and report.pid == victim.pid and report.host
        assert report.exit_code != 0

        after, _ = client.infer(images, VERSION)  # the client follows the new generation
        assert client.generation == 2
        np.testing.assert_allclose(after, before, atol=1e-5)  # same weights, same answers
    finally:
        if client is not None:
            client.close()
        gang.stop()
    assert gang.policy.state is State.STOPPED


def test_mpirun_notice_names_a_rank_killed_by_a_signal() -> None:
    """A SIGKILLed rank writes no error file: mpirun's own notice is all there is."""
    tail = ("mpirun noticed that process rank 1 with PID 4242 on node box7 exited on signal 9 "
            "(Killed).")
    f = mpirun_notice(137, tail)
    assert (f.rank, f.pid, f.host, f.exit_code, f.signal) == (1, 4242, "box7", 137, 9)
    assert "killed by signal 9" in f.summary
    assert mpirun_notice(1, "nothing useful").rank is None
    published = endpoints.EndpointSet(3, (endpoints.RankEndpoint(1, "tcp://h:1", "box9", 555),))
    h = mpirun_notice(137, tail.replace("4242", "0"), published)  # OpenMPI 4 often says PID 0
    assert (h.rank, h.pid, h.host) == (1, 555, "box9")
