"""``python -m jobs.retrain_cron --schedule "<cron expr>" [--ranks N] [--max-runs K] -- <retrain args>``

Runs ``mpirun -n N python -m jobs.retrain <retrain args>`` on a cron schedule (croniter, local
time), never two at once: each trigger takes an exclusive ``flock`` on ``<state>/retrain.lock``
(mpirun inherits it, so it is held until the job's last process is gone); a trigger that finds it
taken -- another scheduler, a crontab entry, a manual run -- is skipped and logged, and so is a
trigger whose time passes while this scheduler's own run is still going. Every trigger is one JSON
line in ``<state>/runs.jsonl``: scheduled time, start, end, status (ok, failed, timeout, error,
skipped), exit code, the version produced, whether it was promoted, and why.

``--once`` triggers immediately (the same lock and runs log): what a crontab line calls, e.g.
``0 3 * * * cd /repo && .venv/bin/python -m jobs.retrain_cron --once -- --epochs 6``.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any

from croniter import croniter

from framestream.exits import NOT_DONE, OK, entry_point
from framestream.flags import add_settings, from_args
from framestream.paths import state_dir
from framestream.settings import Section, section, setting

log = logging.getLogger(__name__)


class CronSettings(Section):
    """Scheduled retraining. ``FRAMESTREAM_CRON_<NAME>``; CLI flags win."""

    model_config = section("cron")

    schedule: str = setting("0 3 * * *", "when retraining runs (5-field cron expression)",
                            ok=croniter.is_valid, expected="a 5-field cron expression")
    ranks: int = setting(2, "ranks of each retraining run", ok=lambda v: 1 <= v <= 4096,
                         expected="1..4096")
    state_dir: Path = setting(doc="the scheduler's lock and runs log",
                              factory=lambda: state_dir() / "retrain", shown="<state>/retrain")
    job_timeout_s: float = setting(3600.0, "seconds one retraining run may take",
                                   ok=lambda v: v > 0, expected="> 0 seconds")


@dataclass(frozen=True)
class RunResult:
    """What one retraining job did."""

    exit_code: int
    version: str | None = None
    promoted: bool | None = None
    reason: str = ""
    timed_out: bool = False


Runner = Callable[[int], RunResult]  # gets the lock's file descriptor, to hand to the job


class MpirunRetrain:
    """Runs the real job: ``mpirun -n ranks python -m jobs.retrain args`` within ``timeout_s``,
    on a gang the launcher reserves on Ray (:mod:`launcher.api`)."""

    def __init__(self, ranks: int, args: Sequence[str], timeout_s: float) -> None:
        self.ranks, self.args, self.timeout_s = ranks, list(args), timeout_s

    def __call__(self, lock_fd: int) -> RunResult:
        # The gang is reserved on Ray by the launcher and released when the run ends:
        # FRAMESTREAM_RAY_ADDRESS names the cluster (one shared with the serving ranks makes the
        # run wait for room instead of crowding them), FRAMESTREAM_LAUNCHER_* the gang's shape
        # and how long to wait for it. A failed run is not relaunched here: the next trigger is.
        from launcher.api import Launcher
        from launcher.settings import LauncherSettings

        with Launcher("retrain", LauncherSettings.load(ranks=self.ranks)) as launcher:
            log.info("starting on gang %s: %s", launcher.name,
                     " ".join(launcher.launch.command("jobs.retrain", self.args)))
            job = launcher.run("jobs.retrain", self.args, timeout_s=self.timeout_s, restarts=0,
                               pass_fds=(lock_fd,))
        if job.timed_out:
            return RunResult(job.exit_code, timed_out=True,
                             reason=f"gave up after {self.timeout_s:.0f}s (raise "
                                    f"FRAMESTREAM_CRON_JOB_TIMEOUT_S or --timeout)")
        if not job.ok:  # the first failing rank's own exception, from its error file
            log.warning("retrain failed with exit code %d: %s\nmpirun's log tail:\n%s",
                        job.exit_code, job.error.summary if job.error else job.reason,
                        job.stderr[-3000:])
            reason = job.error.summary if job.error else job.reason
            return RunResult(job.exit_code or 1, reason=reason[:500])
        got = job.result or {}  # rank 0's result file
        return RunResult(0, version=got.get("version"), promoted=got.get("promoted"),
                         reason=got.get("reason", ""))


class RetrainScheduler:
    """Fires ``runner`` at the cron expression's times; the clock and sleep are injectable."""

    def __init__(self, schedule: str, runner: Runner, state: Path, *,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep,
                 tz: tzinfo | None = None, max_sleep_s: float = 60.0) -> None:
        CronSettings(schedule=schedule)  # validates: ConfigError names FRAMESTREAM_CRON_SCHEDULE
        self.schedule, self.runner, self.state = schedule, runner, Path(state)
        self.clock, self.sleep, self.max_sleep_s = clock, sleep, max_sleep_s
        self.tz = tz or datetime.now().astimezone().tzinfo  # cron times are local, like cron's
        self.lock_path = self.state / "retrain.lock"
        self.runs_log = self.state / "runs.jsonl"

    def _iso(self, t: float) -> str:
        return datetime.fromtimestamp(t, self.tz).isoformat(timespec="seconds")

    def next_after(self, t: float) -> float:
        return float(croniter(self.schedule, datetime.fromtimestamp(t, self.tz)).get_next(float))

    def _record(self, entry: dict[str, Any]) -> dict[str, Any]:
        self.state.mkdir(parents=True, exist_ok=True)
        with open(self.runs_log, "a") as f:
            f.write(json.dumps(entry) + "\n")
        return entry

    def _skip(self, scheduled: float, reason: str) -> dict[str, Any]:
        log.warning("retrain trigger of %s skipped: %s", self._iso(scheduled), reason)
        now = self._iso(self.clock())
        return self._record({"scheduled": self._iso(scheduled), "start": now, "end": now,
                             "status": "skipped", "exit_code": None, "version": None,
                             "promoted": None, "reason": reason})

    def trigger(self, scheduled: float | None = None) -> dict[str, Any]:
        """Run once now unless a run holds the lock; returns (and appends) the record."""
        scheduled = self.clock() if scheduled is None else scheduled
        self.state.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a+") as lock:
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.seek(0)
                holder = lock.read().strip() or "another process"
                return self._skip(scheduled, f"a retrain is already running ({holder} holds "
                                             f"{self.lock_path})")
            lock.seek(0)
            lock.truncate()
            lock.write(f"pid {os.getpid()} since {self._iso(self.clock())}")
            lock.flush()
            start = self.clock()
            log.info("retrain trigger of %s: running", self._iso(scheduled))
            try:
                result = self.runner(lock.fileno())
            except Exception as e:  # the scheduler outlives one bad run
                log.exception("retrain runner raised")
                result = RunResult(-1, reason=f"{type(e).__name__}: {e}")
                status = "error"
            else:
                status = ("timeout" if result.timed_out else
                          "ok" if result.exit_code == 0 else "failed")
            end = self.clock()
        # Closing our descriptor is the unlock: if any process of the job still holds the
        # inherited one, the lock stays taken until it is gone too.
        entry = {"scheduled": self._iso(scheduled), "start": self._iso(start), "end": self._iso(end),
                 "duration_s": round(end - start, 3), "status": status,
                 "exit_code": result.exit_code, "version": result.version,
                 "promoted": result.promoted, "reason": result.reason}
        (log.info if status == "ok" else log.warning)("retrain %s: %s", status, entry)
        return self._record(entry)

    def run(self, max_triggers: int | None = None) -> list[dict[str, Any]]:
        """Fire on schedule until ``max_triggers`` triggers (runs or skips) have happened."""
        records: list[dict[str, Any]] = []
        due = self.next_after(self.clock())
        log.info("retrain scheduled %r: next at %s", self.schedule, self._iso(due))
        while max_triggers is None or len(records) < max_triggers:
            now = self.clock()
            if now < due:
                self.sleep(min(due - now, self.max_sleep_s))  # short naps notice clock jumps
                continue
            records.append(self.trigger(due))
            due = self.next_after(due)
            while due <= self.clock() and (max_triggers is None or len(records) < max_triggers):
                records.append(self._skip(due, "the previous run was still going at this time"))
                due = self.next_after(due)
            log.info("next retrain at %s", self._iso(due))
        return records


def _split(argv: list[str]) -> tuple[list[str], list[str]]:
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, []


@entry_point
def main(argv: list[str] | None = None) -> int:
    from framestream.logs import setup_logging

    own, retrain_args = _split(list(sys.argv[1:] if argv is None else argv))
    p = argparse.ArgumentParser(prog="python -m jobs.retrain_cron",
                                usage="%(prog)s [--schedule EXPR | --once] [options] -- <retrain args>")
    add_settings(p, CronSettings, "schedule", "ranks", "state_dir", "job_timeout_s",
                 aliases={"job_timeout_s": "--timeout"})
    p.add_argument("--once", action="store_true", help="trigger now instead (for a crontab line)")
    p.add_argument("--max-runs", type=int, help="stop after K triggers (runs or skips)")
    a = p.parse_args(own)
    setup_logging()
    s = from_args(a, CronSettings)
    sched = RetrainScheduler(s.schedule, MpirunRetrain(s.ranks, retrain_args, s.job_timeout_s),
                             s.state_dir)
    if a.once:
        entry = sched.trigger()
        print(json.dumps(entry), flush=True)
        return OK if entry["status"] in ("ok", "skipped") else NOT_DONE
    records = sched.run(a.max_runs)
    return OK if all(r["status"] in ("ok", "skipped") for r in records) else NOT_DONE


if __name__ == "__main__":
    sys.exit(main())
