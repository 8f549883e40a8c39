"""The retrain scheduler driven by a fake clock: cron times, the lock, skips, the runs log."""

from __future__ import annotations

import fcntl
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from framestream.errors import ConfigError
from jobs.retrain_cron import CronSettings, RetrainScheduler, RunResult, _split

T0 = datetime(2026, 1, 1, 12, 1, 30, tzinfo=timezone.utc).timestamp()


class FakeClock:
    def __init__(self, t: float = T0) -> None:
        self.t, self.naps = t, []

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.naps.append(seconds)
        self.t += seconds


class FakeRunner:
    """Records when it ran; each run takes ``duration`` seconds of fake time."""

    def __init__(self, clock: FakeClock, duration: float = 30.0, results=None) -> None:
        self.clock, self.duration, self.calls = clock, duration, []
        self.results = list(results or [])

    def __call__(self, lock_fd: int) -> RunResult:
        self.calls.append(self.clock.t)
        self.clock.t += self.duration
        if self.results:
            result = self.results.pop(0)
            if isinstance(result, Exception):
                raise result
            return result
        return RunResult(0, version=f"v{len(self.calls):04d}", promoted=True, reason="better")


def _hm(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%H:%M:%S")


def _scheduler(tmp_path: Path, runner, clock: FakeClock, schedule: str = "*/5 * * * *"):
    return RetrainScheduler(schedule, runner, tmp_path, clock=clock, sleep=clock.sleep,
                            tz=timezone.utc)


def _log(tmp_path: Path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "runs.jsonl").read_text().splitlines()]


def test_runs_fire_at_the_cron_times_and_are_logged(tmp_path: Path) -> None:
    clock = FakeClock()
    runner = FakeRunner(clock)
    records = _scheduler(tmp_path, runner, clock).run(max_triggers=3)
    assert [_hm(t) for t in runner.calls] == ["12:05:00", "12:10:00", "12:15:00"]
    assert records == _log(tmp_path)
    first = records[0]
    assert first["scheduled"] == "2026-01-01T12:05:00+00:00"
    assert first["start"] == "2026-01-01T12:05:00+00:00" and first["end"] == "2026-01-01T12:05:30+00:00"
    assert (first["status"], first["exit_code"], first["version"], first["promoted"]) == \
        ("ok", 0, "v0001", True)
    assert max(clock.naps) <= 60.0  # short naps, so a jump of the wall clock is noticed


def test_hourly_and_daily_expressions(tmp_path: Path) -> None:
    clock = FakeClock()
    runner = FakeRunner(clock)
    _scheduler(tmp_path, runner, clock, "30 3 * * *").run(max_triggers=2)
    assert [datetime.fromtimestamp(t, timezone.utc).isoformat() for t in runner.calls] == \
        ["2026-01-02T03:30:00+00:00", "2026-01-03T03:30:00+00:00"]


def test_a_run_longer_than_the_interval_skips_the_triggers_it_overlaps(tmp_path: Path) -> None:
    clock = FakeClock()
    runner = FakeRunner(clock, duration=12 * 60)  # 12:05 -> 12:17: overlaps 12:10 and 12:15
    records = _scheduler(tmp_path, runner, clock).run(max_triggers=4)
    assert [r["status"] for r in records] == ["ok", "skipped", "skipped", "ok"]
    assert [r["scheduled"][11:19] for r in records] == ["12:05:00", "12:10:00", "12:15:00", "12:20:00"]
    assert "still going" in records[1]["reason"]
    assert [_hm(t) for t in runner.calls] == ["12:05:00", "12:20:00"]  # never two at once


def test_a_trigger_that_finds_the_lock_taken_is_skipped(tmp_path: Path) -> None:
    clock = FakeClock()
    runner = FakeRunner(clock)
    sched = _scheduler(tmp_path, runner, clock)
    tmp_path.mkdir(exist_ok=True)
    with open(tmp_path / "retrain.lock", "a+") as other:  # another scheduler, crontab or manual run
        fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        other.write("pid 4242 since earlier")
        other.flush()
        skipped = sched.trigger()
    assert runner.calls == []
    assert skipped["status"] == "skipped" and "already running" in skipped["reason"]
    assert "pid 4242" in skipped["reason"]
    ran = sched.trigger()  # the lock is free again
    assert ran["status"] == "ok" and len(runner.calls) == 1
    assert [r["status"] for r in _log(tmp_path)] == ["skipped", "ok"]


def test_the_lock_is_held_while_the_job_runs(tmp_path: Path) -> None:
    clock = FakeClock()
    seen = []

    def runner(lock_fd: int) -> RunResult:
        with open(tmp_path / "retrain.lock", "a+") as probe:
            try:
                fcntl.flock(probe.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                seen.append("free")
            except BlockingIOError:
                seen.append("held")
        return RunResult(0)

    _scheduler(tmp_path, runner, clock).trigger()
    assert seen == ["held"]


def test_failures_are_recorded_and_the_schedule_goes_on(tmp_path: Path) -> None:
    clock = FakeClock()
    runner = FakeRunner(clock, results=[RunResult(1, reason="rank 1 died"), RuntimeError("no mpirun"),
                                        RunResult(-9, timed_out=True, reason="gave up")])
    records = _scheduler(tmp_path, runner, clock).run(max_triggers=4)
    assert [r["status"] for r in records] == ["failed", "error", "timeout", "ok"]
    assert records[0]["exit_code"] == 1 and records[0]["reason"] == "rank 1 died"
    assert "RuntimeError: no mpirun" in records[1]["reason"]
    assert records[3]["version"] == "v0004"


def test_bad_expressions_and_settings_name_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="FRAMESTREAM_CRON_SCHEDULE"):
        RetrainScheduler("every night", FakeRunner(FakeClock()), tmp_path)
    with pytest.raises(ConfigError, match="FRAMESTREAM_CRON_RANKS"):
        CronSettings.load(env={"FRAMESTREAM_CRON_RANKS": "0"})
    assert CronSettings.load(env={"FRAMESTREAM_CRON_SCHEDULE": "*/10 * * * *"}).schedule == "*/10 * * * *"


def test_argument_split() -> None:
    assert _split(["--once", "--", "--epochs", "2"]) == (["--once"], ["--epochs", "2"])
    assert _split(["--once"]) == (["--once"], [])


def test_cli_rejects_a_bad_schedule_naming_the_setting(capsys: pytest.CaptureFixture[str]) -> None:
    from jobs.retrain_cron import main

    assert main(["--schedule", "every night", "--", "--epochs", "1"]) == 2
    assert "FRAMESTREAM_CRON_SCHEDULE" in capsys.readouterr().err
