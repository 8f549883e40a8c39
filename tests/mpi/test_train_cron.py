"""Scheduled retraining with the real job: mpirun ranks train, publish and log the run."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timezone
from pathlib import Path

import pytest

from framestream.paths import REPO
from jobs.retrain_cron import MpirunRetrain, RetrainScheduler
from models.registry import Registry

pytestmark = [pytest.mark.mpi, pytest.mark.ray]


def _args(tmp_path: Path) -> list[str]:
    return ["--max-train", "1000", "--epochs", "1", "--holdout-limit", "1000", "--backend", "torch",
            "--registry", str(tmp_path / "reg"), "--checkpoint-dir", str(tmp_path / "ckpt"),
            "--no-progress"]


def test_scheduler_runs_the_real_job_and_logs_the_version(tmp_path: Path) -> None:
    t = [1_767_269_000.0]  # fake time: the trigger fires without anybody waiting a minute
    sched = RetrainScheduler("* * * * *", MpirunRetrain(2, _args(tmp_path), timeout_s=120),
                             tmp_path / "state", clock=lambda: t[0],
                             sleep=lambda s: t.__setitem__(0, t[0] + s), tz=timezone.utc)
    [record] = sched.run(max_triggers=1)
    assert record["status"] == "ok" and record["exit_code"] == 0
    assert record["version"] == "v0001" and record["promoted"] is True
    assert Registry(tmp_path / "reg").serving() == "v0001"
    logged = json.loads((tmp_path / "state" / "runs.jsonl").read_text())
    assert logged == record


def test_once_from_the_command_line_and_a_failing_job_is_recorded(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "jobs.retrain_cron", "--once", "--ranks", "2",
           "--state-dir", str(tmp_path / "state"), "--"]
    bad = subprocess.run(cmd + _args(tmp_path) + ["--resume", "--seed", "-1"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1
    record = json.loads(bad.stdout.strip().splitlines()[-1])
    assert record["status"] == "failed" and record["exit_code"] != 0
    assert "FRAMESTREAM_TRAIN_SEED" in record["reason"]
    assert record["version"] is None
    runs = (tmp_path / "state" / "runs.jsonl").read_text().splitlines()
    assert [json.loads(r)["status"] for r in runs] == ["failed"]
