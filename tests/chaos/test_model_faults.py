"""Chaos on the model side while a steady stream runs from a registry:

- a version whose weights fail their checksum is promoted (serving.json names it: a tool that
  skipped the check, or storage that rotted after promotion) -> refused by the driver and every
  rank, serving stays on the old version; a good version promoted after it is followed;
- the retraining gang is killed mid-epoch -> the cron records the failure, its next run resumes
  from the checkpoint, serving is untouched.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from framestream.paths import REPO
from models.registry import Registry
from models.train_loop import checkpoint_from_bytes
from tests.chaos.harness import ChaosStream, Profile, assert_conserved, record
from tests.stream.helpers import wait_until
from tests.helpers.registry import corrupt_weights, publish_random

pytestmark = [pytest.mark.chaos, pytest.mark.spark, pytest.mark.kafka, pytest.mark.mpi,
              pytest.mark.slow, pytest.mark.ray]


def test_promoted_version_with_a_bad_checksum_is_refused(kafka_bootstrap: str,
                                                         topics: dict[str, str], tmp_path: Path,
                                                         prof: Profile) -> None:
    registry = Registry(tmp_path / "registry")
    v1 = publish_random(registry, 1)
    assert registry.promote(v1).promoted
    v2, v3 = publish_random(registry, 2, v1), publish_random(registry, 3, v1)
    run = ChaosStream(kafka_bootstrap, topics, tmp_path, dataclasses.replace(
        prof, frames=max(prof.frames, 2500)), model=("--registry", str(registry.root)))
    run.start()
    try:
        run.produce()
        run.settle()
        corrupt_weights(registry, v2)
        state = json.loads((registry.root / "serving.json").read_text())
        run.fault_start()
        (registry.root / "serving.json").write_text(json.dumps({**state, "version": v2}))
        log = run.logs[-1]
        wait_until(lambda: f"refusing to serve {v2}" in log.read_text(errors="replace"), 60,
                   "the driver to refuse the bad version")
        time.sleep(5.0)  # the bad promotion stands for 5 s: ten of the ranks' refresh periods
        assert _served_by_ranks(run) == {v1}  # every rank refused to switch to it
        run.fault_end()
        assert registry.promote(v3, force=True).promoted  # a good one, promoted properly
        promoted_v3 = time.time()
        b = run.finish()
    finally:
        code = run.stop()
    assert code == 0, run.log_tail()
    assert_conserved(b, run.total)
    assert v2 not in b.versions and b.versions.get(v1, 0) > 0, b.versions
    assert b.versions.get(v3, 0) > 0, f"{v3} never served after its promotion: {b.versions}"
    assert run.stats()["rank_restarts"] == 0
    record("bad_checksum_promotion", "serving.json names a version whose weights fail their "
           "checksum; a good version is promoted after it", prof, b,
           refused_after_s=round(run.t1 - run.t0, 3),
           good_version_after_s=round(promoted_v3 - run.t0, 3))


def _served_by_ranks(run: ChaosStream) -> set[str]:
    """The default version each rank reports on its Prometheus endpoint."""
    import re
    import urllib.request

    found = set()
    for r in run.ranks():
        text = urllib.request.urlopen(r["metrics"], timeout=10).read().decode()
        found |= set(re.findall(r'framestream_rank_model_info\{[^}]*version="([^"]+)"', text))
    return found


def _cron(registry: Path, ckpt: Path, state: Path, log: Path) -> subprocess.Popen[bytes]:
    args = ["--resume", "--epochs", "3", "--max-train", "9000", "--holdout-limit", "1000",
            "--threads", "1", "--backend", "torch", "--no-progress", "--no-promote",
            "--registry", str(registry), "--checkpoint-dir", str(ckpt)]
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "jobs.retrain_cron", "--once", "--ranks",
                                 "2", "--state-dir", str(state), "--", *args], cwd=REPO,
                                env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _training_ranks(root: int) -> list[int]:
    import psutil

    return [p.pid for p in psutil.Process(root).children(recursive=True)
            if "python" in p.name() and any("jobs.retrain" in a for a in p.cmdline())
            and "retrain_cron" not in " ".join(p.cmdline())]


def test_retrain_gang_killed_mid_epoch_resumes_and_serving_is_untouched(
        kafka_bootstrap: str, topics: dict[str, str], tmp_path: Path, prof: Profile) -> None:
    registry = Registry(tmp_path / "registry")
    v1 = publish_random(registry, 1)
    assert registry.promote(v1).promoted
    ckpt, state = tmp_path / "ckpt", tmp_path / "cron"
    run = ChaosStream(kafka_bootstrap, topics, tmp_path, dataclasses.replace(prof, rate=50.0),
                      model=("--registry", str(registry.root)))
    run.start()
    retrained = threading.Event()  # the producer runs until the resumed retrain is done
    try:
        cron = _cron(registry.root, ckpt, state, tmp_path / "cron-1.log")
        run.produce(until=retrained)
        wait_until(lambda: (ckpt / "last.pt").exists() or cron.poll() is not None, 300,
                   "the first epoch's checkpoint")
        assert cron.poll() is None, (tmp_path / "cron-1.log").read_text()[-3000:]
        done = checkpoint_from_bytes((ckpt / "last.pt").read_bytes())["history"]
        gang = _training_ranks(cron.pid)
        assert len(gang) == 2, gang
        run.fault_start()
        for pid in gang:
            os.kill(pid, signal.SIGKILL)
        assert cron.wait(120) == 1  # the cron run reports the failure
        failed_after = time.time() - run.t0
        first = [json.loads(line) for line in (state / "runs.jsonl").read_text().splitlines()]
        assert first[-1]["status"] == "failed", first
        second = _cron(registry.root, ckpt, state, tmp_path / "cron-2.log")
        assert second.wait(600) == 0, (tmp_path / "cron-2.log").read_text()[-3000:]
        run.fault_end()
        retrained.set()
        b = run.finish()
    finally:
        retrained.set()
        code = run.stop()
    assert code == 0, run.log_tail()
    runs = [json.loads(line) for line in (state / "runs.jsonl").read_text().splitlines()]
    assert [r["status"] for r in runs] == ["failed", "ok"], runs
    assert runs[1]["version"] and runs[1]["promoted"] is False
    history = checkpoint_from_bytes((ckpt / "last.pt").read_bytes())["history"]
    assert len(history) == 3
    assert history[:len(done)] == done  # the epochs done before the kill were not redone
    assert registry.serving() == v1  # serving untouched: no promotion, no switch
    assert_conserved(b, run.total)
    assert b.versions == {v1: b.predictions}
    assert run.stats()["rank_restarts"] == 0
    record("retrain_kill", "kill -9 the 2 training ranks mid-epoch (after epoch "
           f"{len(done)} of 3); cron records the failure, the next cron run resumes", prof, b,
           epochs_before_kill=len(done), failure_recorded_after_s=round(failed_after, 3),
           resumed_run_s=runs[1]["duration_s"], resumed_version=runs[1]["version"])
