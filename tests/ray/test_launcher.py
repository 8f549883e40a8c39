"""Real Ray + real mpirun: a gang is reserved, runs, is supervised and is always given back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from framestream.paths import REPO
from launcher.api import Launcher
from launcher.errors import GangReservationTimeout
from launcher.policy import State, SupervisionPolicy
from launcher.ray_cluster import RaySettings
from launcher.records import read_all
from launcher.settings import LauncherSettings
from framestream import endpoints

pytestmark = pytest.mark.ray
VERSION = "random-fashion_cnn"


@pytest.fixture(autouse=True)
def own_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAMESTREAM_STATE", str(tmp_path / "state"))  # gang records, hostfiles


def _free() -> dict[str, float]:
    import ray

    free = ray.available_resources()  # Ray leaves out what is at 0
    return {"CPU": free.get("CPU", 0.0), "GPU": free.get("GPU", 0.0)}


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.1)  # polling Ray's / another process's state, bounded by the deadline


def _settings(**kw) -> LauncherSettings:
    kw.setdefault("backoff_s", 0.2)
    return LauncherSettings.load(env={}, **kw)


def test_two_bundle_gang_runs_mpirun_on_its_reservation_and_gives_it_back(ray_local) -> None:
    before = _free()
    with Launcher("run", _settings(ranks=2, timeout_s=30)) as launcher:
        assert _free()["CPU"] == before["CPU"] - 2  # the holders occupy both bundles
        hostfile = launcher.launch.hostfile.read_text()
        result = launcher.run("mpi_workers.selfcheck", timeout_s=120)
        record = read_all()[0]
    assert result.exit_code == 0 and result.ok, result.stderr[-3000:]
    out = result.result  # rank 0's result file (the CompletionPolicy requires it)
    assert out is not None and out["world_size"] == 2 and out["torch_allreduce"] == [3.0] * 4
    assert hostfile.endswith(" slots=2\n")
    assert record["kind"] == "run" and len(record["bundles"]) == 2 and record["alive"]
    _wait(lambda: _free() == before, 30, "the cluster's free resources to return")
    assert read_all() == []  # the record goes with the gang


def test_run_to_completion_needs_the_result_file_and_reports_the_first_failing_rank(
        ray_local) -> None:
    before = _free()
    with Launcher("run", _settings(ranks=2, timeout_s=30)) as launcher:
        silent = launcher.run("this", timeout_s=60, restarts=1)  # exits 0, writes no result
        failed = launcher.run("mpi_workers.selfcheck", ["--fail-rank", "1"], timeout_s=120,
                              restarts=0)
    assert silent.exit_code == 0 and not silent.ok and silent.result is None
    assert silent.restarts == 1 and "no result file" in silent.reason  # retried once, then gave up
    assert not failed.ok and failed.restarts == 0 and len(failed.reports) == 1
    err = failed.error  # rank 1's error file, read on this gang's node
    assert err is not None and err.rank == 1 and err.host and err.pid
    assert err.message == "RuntimeError: requested failure (--fail-rank)"
    assert "Traceback" in err.callstack and "retry limit 0" in failed.reason
    _wait(lambda: _free() == before, 30, "the cluster's free resources to return")


def test_unfittable_gang_times_out_releases_retries_then_says_which_flag(ray_local) -> None:
    from ray.util import placement_group_table

    before = _free()
    started = time.monotonic()
    with pytest.raises(GangReservationTimeout) as err:
        Launcher("run", _settings(ranks=2, cpus_per_rank=2, timeout_s=1, retries=2)).acquire()
    elapsed = time.monotonic() - started
    assert err.value.attempts == 3 and elapsed >= 3  # three attempts of 1 s, with backoff
    message = str(err.value)
    assert "gang of 2 bundles" in message and "'CPU': 4.0" in message  # what was asked
    assert "free in the cluster: {'CPU': 2.0}" in message             # what was free
    assert "never fit" in message and "--cpus-per-rank" in message   # which flag to change
    assert all(t["state"] == "REMOVED" for t in placement_group_table().values())
    assert _free() == before and read_all() == []


def test_killed_rank_is_relaunched_on_the_same_reservation_as_a_new_generation(
        ray_local, tmp_path: Path) -> None:
    from etl.client import ClientSettings, RankClient

    ep_file = tmp_path / "endpoints.json"
    before = _free()
    launcher = Launcher("serve", _settings(ranks=2, restarts=2))
    launcher.acquire()
    client = None
    try:
        pg = launcher.gang.pg
        gang = launcher.serve(["--version", VERSION, "--threads", "1"], ep_file, tmp_path / "logs",
                              policy=SupervisionPolicy(max_restarts=2, backoff_s=0.2))
        first = endpoints.read(ep_file)
        assert first.generation == 1 and all(e.device == "cpu" for e in first.ranks)
        client = RankClient(first, ClientSettings(chunk_frames=64, request_timeout_s=5),
                            refresh=lambda: endpoints.read(ep_file))
        images = np.random.default_rng(0).integers(0, 256, (256, 28, 28, 1), dtype=np.uint8)
        before_kill, _ = client.infer(images, VERSION)

        victim = first.ranks[1]
        os.kill(victim.pid, signal.SIGKILL)
        _wait(lambda: gang.generation == 2 and gang.policy.state is State.RUNNING, 90,
              "the gang to come back as generation 2")
        assert gang.restarts == 1 and endpoints.read(ep_file).generation == 2
        report = gang.reports[0]
        assert (report.rank, report.pid) == (1, victim.pid) and report.host and report.exit_code
        assert launcher.gang.pg is pg  # relaunched on the reservation it already held
        after, _ = client.infer(images, VERSION)
        np.testing.assert_allclose(after, before_kill, atol=1e-5)

        status = subprocess.run([sys.executable, "-m", "launcher", "status"], cwd=REPO,
                                capture_output=True, text=True, timeout=60,
                                env={**os.environ, "PYTHONPATH": str(REPO)})
        assert status.returncode == 0, status.stderr[-2000:]
        text = status.stdout
        assert f"gang {launcher.name} (serve): running" in text
        assert "generation 2, restarts 1" in text and "free {'CPU': 0.0" in text
        assert text.count("  bundle ") == 2 and "rank 1: bundle" in text and "failure: rank 1" in text
    finally:
        if client is not None:
            client.close()
        launcher.release()
    _wait(lambda: _free() == before, 30, "the cluster's free resources to return")


def test_ctrl_c_on_the_cli_stops_the_ranks_and_releases_the_gang(ray_local, tmp_path: Path) -> None:
    import ray

    before = _free()
    address = ray.get_runtime_context().gcs_address
    proc = subprocess.Popen(
        [sys.executable, "-m", "launcher", "serve", "--address", address, "--ranks", "2",
         "--endpoints", str(tmp_path / "ep.json"), "--", "--version", VERSION, "--threads", "1"],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        line = proc.stdout.readline()  # the CLI prints one JSON line once the ranks serve
        assert line.startswith("{"), proc.stderr.read()[-3000:] if proc.poll() is not None else line
        up = json.loads(line)
        assert up["generation"] == 1 and _free()["CPU"] == before["CPU"] - 2
        pids = [r.pid for r in endpoints.read(tmp_path / "ep.json").ranks]
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=10)
    assert proc.returncode == 130 and "gang released" in err, err[-3000:]
    _wait(lambda: _free() == before, 30, "the gang to be released")
    _wait(lambda: not any(_alive(p) for p in pids), 30, "the ranks to exit")
    assert read_all() == []


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_ray_settings_reject_a_bad_address() -> None:
    from framestream.errors import ConfigError

    with pytest.raises(ConfigError, match="FRAMESTREAM_RAY_ADDRESS"):
        RaySettings.load(env={"FRAMESTREAM_RAY_ADDRESS": "nowhere"})


def test_scheduled_retrain_goes_through_the_launcher_and_waits_for_room(
        ray_local, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from jobs.retrain_cron import MpirunRetrain, RetrainScheduler

    monkeypatch.setenv("FRAMESTREAM_LAUNCHER_TIMEOUT_S", "1")
    monkeypatch.setenv("FRAMESTREAM_LAUNCHER_RETRIES", "0")
    with Launcher("serve", _settings(ranks=2)):  # serving holds the whole cluster
        sched = RetrainScheduler("0 3 * * *", MpirunRetrain(2, ["--epochs", "1"], timeout_s=60),
                                 tmp_path / "cron")
        record = sched.trigger()
    assert record["status"] == "error" and record["exit_code"] == -1
    assert "could not reserve a gang of 2 bundles" in record["reason"]
    assert "other gangs hold what is missing" in record["reason"]
