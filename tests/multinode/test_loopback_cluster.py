"""Two real Ray nodes on loopback (the worker in its own network namespace and host name):
gangs spread over both, serving and retraining share the cluster, the stream runs on Spark's
standalone master with its ranks on both nodes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from framestream import results
from framestream.paths import REPO
from framestream.producer import fashion_frames, publish_frames
from launcher.api import Launcher
from launcher.records import read_all
from launcher.settings import LauncherSettings
from framestream import endpoints

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.mpi]
VERSION = "random-fashion_cnn"


@pytest.fixture(autouse=True)
def own_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAMESTREAM_STATE", str(tmp_path / "state"))


def _settings(**kw) -> LauncherSettings:
    kw.setdefault("backoff_s", 0.5)
    return LauncherSettings.load(env={}, **kw)


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.1)  # polling another thread's / process's state, bounded by the deadline


def test_spread_gang_runs_one_rank_on_each_node_and_the_allreduce_is_right(loopback_ray) -> None:
    cluster = loopback_ray
    with Launcher("run", _settings(ranks=2, strategy="SPREAD")) as launcher:
        hostfile = launcher.launch.hostfile.read_text()
        mca = launcher.launch.layout.mca
        result = launcher.run("mpi_workers.selfcheck", timeout_s=120, restarts=0)
    assert result.exit_code == 0, result.stderr[-3000:]
    assert hostfile == f"{cluster.head_ip} slots=1\n{cluster.worker_ips[0]} slots=1\n"
    assert "plm_rsh_agent" in mca  # the second node was reached through its Ray holder
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["world_size"] == 2 and out["hosts"][1] == "fsnode1" != out["hosts"][0]
    assert out["mpi_allreduce"] == [3.0] * 4 and out["torch_allreduce"] == [3.0] * 4


class Throughput:
    """Frames/s the serving gang answers, measured by a client in a thread."""

    def __init__(self, ep_file: Path) -> None:
        from etl.client import ClientSettings, RankClient

        settings = ClientSettings.load(chunk_frames=128, request_timeout_s=10)  # + CURVE keys
        self.client = RankClient(endpoints.read(ep_file), settings,
                                 refresh=lambda: endpoints.read(ep_file))
        self.images = np.random.default_rng(0).integers(0, 256, (512, 28, 28, 1), dtype=np.uint8)

    def measure(self, seconds: float) -> float:
        frames, started = 0, time.monotonic()
        while time.monotonic() - started < seconds:
            self.client.infer(self.images, VERSION)
            frames += len(self.images)
        return frames / (time.monotonic() - started)


def _retrain_cli(*flags: str, job_args: tuple[str, ...] = ()) -> subprocess.Popen[str]:
    """The retraining launcher as its own process, as the cron would run it."""
    return subprocess.Popen([sys.executable, "-m", "launcher", "retrain", "--ranks", "2", *flags,
                             "--", *job_args], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _reserving(kind: str) -> bool:
    return any(r["kind"] == kind and r["state"] == "reserving" for r in read_all())


def test_retrain_waits_for_its_gang_and_serving_keeps_its_throughput(loopback_ray, curve_keys,
                                                                     tmp_path: Path) -> None:
    ep_file = tmp_path / "endpoints.json"
    serving = Launcher("serve", _settings(ranks=2, strategy="SPREAD"))
    serving.acquire()  # the whole cluster: one CPU on each node
    meter = short = patient = None
    try:
        gang = serving.serve(["--version", VERSION, "--threads", "1"], ep_file, tmp_path / "logs")
        assert len({r.host for r in endpoints.read(ep_file).ranks}) == 2  # one rank per node
        meter = Throughput(ep_file)
        meter.measure(seconds=1.0)  # warm up
        baseline = meter.measure(seconds=3.0)

        # A retrain that cannot get its gang waits (holding nothing), then gives up; serving is
        # neither preempted nor slowed down while it waits.
        short = _retrain_cli("--address", loopback_ray.address, "--timeout", "8", "--retries", "0")
        _wait(lambda: _reserving("retrain"), 60, "the retrain to wait for its gang")
        during = meter.measure(seconds=3.0)
        _, err = short.communicate(timeout=60)
        assert short.returncode == 3, err[-3000:]
        assert "could not reserve a gang of 2 bundles" in err and "free in the cluster" in err
        assert "other gangs hold what is missing: raise --timeout or --retries" in err
        assert gang.restarts == 0 and gang.generation == 1  # never preempted
        print(f"serving: {baseline:.0f} frames/s alone, {during:.0f} while a retrain waited")
        assert during >= 0.5 * baseline, (during, baseline)

        # A retrain with time to wait gets its gang once serving lets go, then trains for real.
        patient = _retrain_cli("--address", loopback_ray.address, "--timeout", "120", job_args=(
            "--max-train", "1000", "--epochs", "1", "--holdout-limit", "500", "--backend",
            "torch", "--threads", "1", "--registry", str(tmp_path / "reg"), "--checkpoint-dir",
            str(tmp_path / "ckpt"), "--no-progress"))
        _wait(lambda: _reserving("retrain"), 60, "the second retrain to wait for its gang")
        waited_from = time.monotonic()
        meter.measure(seconds=2.0)
        assert patient.poll() is None and gang.restarts == 0  # still waiting, serving intact
        meter.client.close()
        meter = None
        serving.release()
        held_for = time.monotonic() - waited_from
        out, err = patient.communicate(timeout=300)
        assert patient.returncode == 0, err[-3000:]
        summary = json.loads(next(line for line in reversed(err.splitlines())
                                  if line.startswith('{"gang"')))
        assert summary["reserve_s"] >= held_for  # it got the gang only once serving let go
        assert json.loads(out.strip().splitlines()[-1])["version"] == "v0001"
    finally:
        if meter is not None:
            meter.client.close()
        for proc in (short, patient):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=30)
        serving.release()


@pytest.mark.kafka
@pytest.mark.spark
def test_stream_runs_on_spark_standalone_with_ranks_on_both_ray_nodes(
        loopback_ray, spark_master, curve_keys, kafka_bootstrap, new_topic, tmp_path: Path) -> None:
    from tests.stream.helpers import SPARK_SUBMIT, stream_env

    topics = {"frames": new_topic(2, "frames"), "predictions": new_topic(2, "predictions"),
              "dlq": new_topic(2, "dlq")}
    total = 400
    assert publish_frames(kafka_bootstrap, topics["frames"], fashion_frames(total)).sent == total
    env = {**stream_env(), "FRAMESTREAM_RAY_ADDRESS": loopback_ray.address,
           "FRAMESTREAM_LAUNCHER_STRATEGY": "SPREAD", "FRAMESTREAM_STATE": str(tmp_path / "state"),
           # Spark logs at WARN by default; its INFO line "Connecting to master" proves the mode
           "FRAMESTREAM_SPARK_LOG_LEVEL": "INFO"}
    cmd = [SPARK_SUBMIT, "--master", spark_master, "--conf", "spark.ui.enabled=false",
           "--conf", "spark.executor.memory=1g", str(REPO / "jobs/stream_classify.py"),
           "--ranks", "2", "--rank-threads", "1", "--version", VERSION, "--available-now",
           "--bootstrap", kafka_bootstrap, "--topic", topics["frames"],
           "--predictions-topic", topics["predictions"], "--dlq-topic", topics["dlq"],
           "--checkpoint", str(tmp_path / "checkpoint"),
           "--endpoints", str(tmp_path / "endpoints.json"), "--request-timeout", "10"]
    log = tmp_path / "stream.log"
    with open(log, "wb") as out:
        code = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                              timeout=300).returncode
    text = log.read_text(errors="replace")
    assert code == 0, text[-4000:]
    assert f"Connecting to master {spark_master}" in text, text[-3000:]  # not local mode
    published = endpoints.read(tmp_path / "endpoints.json")
    assert sorted(r.host for r in published.ranks) == ["fsnode1", os.uname().nodename]
    assert {r.endpoint.split(":")[1].lstrip("/") for r in published.ranks} == {
        loopback_ray.head_ip, loopback_ray.worker_ips[0]}  # reachable node addresses
    summary = results.summarize(total, results.read_topic(kafka_bootstrap, topics["predictions"],
                                                          timeout=30),
                                results.read_topic(kafka_bootstrap, topics["dlq"], timeout=30))
    assert summary.predictions == total and summary.dead_letters == 0
