"""The launcher's public API: reserve a gang on Ray, start mpirun on it, supervise, release.

    with Launcher("serve", LauncherSettings.load(ranks=2)) as launcher:   # reserve (or raise)
        gang = launcher.serve(["--version", v], endpoints_file, log_dir)  # ranks publish gen 1
        ...                                                              # relaunched on failure
    # released here: on normal exit, on an exception, on Ctrl-C

    with Launcher("retrain", settings) as launcher:
        result = launcher.run("jobs.retrain", args, timeout_s=3600)       # JobResult
        result.ok, result.result, result.error                           # rank 0's result file,
                                                                         # the first failing rank

Raises on entry: GangReservationTimeout (nothing reserved, the message says what was asked, what
was free and which flag to change), DeadlineExceeded (holders did not start), GangCancelled.
``run`` raises nothing for a failing job: its JobResult carries the exit code, the first failing
rank's error file and the reports (:mod:`framestream.run_files`; no stdout or stderr parsing).
"""

from __future__ import annotations

import logging
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from framestream.paths import state_dir
from launcher.errors import RankFailed
from launcher.gang import ServingGang
from launcher.mpirun import GangLaunch, MpiJob, start_ranks
from launcher.policy import CompletionPolicy, GiveUp, Launch, State, SupervisionPolicy, Wait
from launcher.ray_cluster import RaySettings, connect
from launcher.ray_gang import RayGang
from launcher.records import GangRecord
from launcher.settings import LauncherSettings
from framestream import endpoints

log = logging.getLogger(__name__)


@dataclass
class JobResult:
    """How a run-to-completion gang ended: the last launch's exit code, rank 0's result file
    (``result``), its first failing rank (``error``: rank, host, pid, exception, traceback),
    every failed try's report, why the policy gave up, and mpirun's output for humans."""

    exit_code: int
    stdout: str = ""
    stderr: str = ""
    restarts: int = 0
    reports: list[RankFailed] = field(default_factory=list)
    timed_out: bool = False
    result: dict[str, Any] | None = None
    error: RankFailed | None = None
    reason: str = ""
    ok: bool = False


class Launcher:
    def __init__(self, kind: str, settings: LauncherSettings | None = None,
                 ray_settings: RaySettings | None = None, *, name: str | None = None,
                 run_dir: Path | None = None, cancel: threading.Event | None = None) -> None:
        self.kind = kind
        self.settings = settings or LauncherSettings.load()
        self.ray_settings = ray_settings or RaySettings.load()
        self.name = name or f"{kind}-{uuid.uuid4().hex[:8]}"
        self.run_dir = Path(run_dir or state_dir() / "gangs" / self.name)
        self.cancel = cancel or threading.Event()
        self.gang: RayGang | None = None
        self.record: GangRecord | None = None
        self.ray_info: dict[str, Any] = {}
        self.serving: ServingGang | None = None
        self._own_ray = False
        self._lock = threading.Lock()

    # -- reservation -------------------------------------------------------------------------

    def __enter__(self) -> "Launcher":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    @property
    def launch(self) -> GangLaunch:
        assert self.gang is not None and self.gang.launch is not None, "acquire() first"
        return self.gang.launch

    def acquire(self) -> GangLaunch:
        import ray

        self._own_ray = not ray.is_initialized()
        main = threading.current_thread() is threading.main_thread()
        previous = signal.getsignal(signal.SIGTERM) if main else None
        self.ray_info = connect(self.ray_settings)
        if main and previous is not None:
            signal.signal(signal.SIGTERM, previous)  # ray.init replaces it with sys.exit
        self.record = GangRecord(self.name, self.kind, self.ray_info)
        self.gang = RayGang(self.name, self.settings, self.run_dir, cancel=self.cancel)
        self._update(state="reserving", strategy=self.settings.strategy)
        try:
            launch = self.gang.acquire()
        except BaseException:
            self.release()
            raise
        self._update(state="reserved", **self.gang.describe())
        return launch

    def release(self) -> None:
        """Stop the ranks (if serving), release the gang, drop the record; idempotent."""
        import ray

        if self.serving is not None:
            self.serving.stop()
            self.serving = None
        if self.gang is not None:
            self.gang.release()
        if self.record is not None:
            self.record.remove()
            self.record = None
        if self._own_ray and ray.is_initialized():
            ray.shutdown()
            self._own_ray = False

    def _update(self, **fields: Any) -> None:
        with self._lock:
            if self.record is not None:
                self.record.update(**fields)

    # -- serving -----------------------------------------------------------------------------

    def serve(self, serve_args: Sequence[str], endpoints_file: Path, log_dir: Path, *,
              start_timeout_s: float | None = None,
              start_timeout_setting: str = "FRAMESTREAM_LAUNCHER_LAUNCH_TIMEOUT_S",
              policy: SupervisionPolicy | None = None) -> ServingGang:
        """Start ``mpi_workers.serve`` on the gang and supervise it (relaunch, new generation)."""
        s = self.settings
        policy = policy or SupervisionPolicy(max_restarts=s.restarts, backoff_s=s.backoff_s,
                                             backoff_max_s=s.backoff_max_s, jitter=s.jitter)
        gang = ServingGang(s.ranks, serve_args, Path(endpoints_file), Path(log_dir), policy,
                           start_timeout_s=start_timeout_s or s.launch_timeout_s,
                           launch=self.launch, on_change=self._serving_changed,
                           start_timeout_setting=start_timeout_setting)
        self.serving = gang
        gang.start()
        self._serving_changed(gang)
        return gang

    def _serving_changed(self, gang: ServingGang) -> None:
        assert self.gang is not None
        ranks = self.gang.describe()["ranks"]
        current = endpoints.read(gang.endpoints_file)
        if current is not None and current.generation == gang.generation:
            by_rank = {r.rank: r for r in current.ranks}
            for k in ranks:
                if k["rank"] in by_rank:
                    k.update(pid=by_rank[k["rank"]].pid, endpoint=by_rank[k["rank"]].endpoint)
        self._update(state=gang.policy.state.value, generation=gang.generation,
                     restarts=gang.restarts, ranks=ranks, endpoints_file=str(gang.endpoints_file),
                     failures=[r.summary for r in gang.reports])

    # -- run to completion ---------------------------------------------------------------------

    def start(self, module: str, args: Sequence[str] = (), *, attempt: int = 1,
              env: Mapping[str, str] | None = None, pass_fds: Sequence[int] = ()) -> MpiJob:
        """Start ``python -m module args`` on the gang and return at once (the caller waits):
        for a job that must be fed while it runs (``jobs/retrain_kafka.py``). Its run files and
        output are in ``<run_dir>/launch-<attempt>``."""
        folder = self.run_dir / f"launch-{attempt}"
        shutil.rmtree(folder, ignore_errors=True)  # a name reused: never read an old result
        job = start_ranks(module, args, launch=self.launch, env=env, run_dir=folder,
                          pass_fds=pass_fds)
        log.info("gang %s: %s (run files in %s)", self.name, " ".join(job.cmd), folder)
        return job

    def run(self, module: str, args: Sequence[str] = (), *, timeout_s: float,
            restarts: int | None = None, pass_fds: Sequence[int] = (),
            env: Mapping[str, str] | None = None, require_result: bool = True) -> JobResult:
        """Run ``mpirun ... python -m module args`` on the gang to completion, under the
        :class:`~launcher.policy.CompletionPolicy`: done when it exits 0 and rank 0 wrote its
        result file (``require_result``); a failure is retried up to ``restarts`` times (default:
        the ``restarts`` setting) with backoff, all within ``timeout_s``. Raises nothing for a
        failing job: the JobResult carries the result, the first failing rank and the reason."""
        s = self.settings
        policy = CompletionPolicy(max_retries=s.restarts if restarts is None else restarts,
                                  backoff_s=s.backoff_s, backoff_max_s=s.backoff_max_s,
                                  jitter=s.jitter, require_result=require_result)
        deadline = time.monotonic() + timeout_s
        reports: list[RankFailed] = []
        action = policy.start()
        result = JobResult(-1)
        while isinstance(action, Launch):
            self._update(state="running", generation=action.generation, restarts=policy.retries)
            result = self._run_once(self.start(module, args, attempt=action.generation, env=env,
                                               pass_fds=pass_fds), deadline)
            if result.timed_out:
                action = policy.timed_out(timeout_s, "the job timeout (--timeout)")
                break
            if result.error is not None:
                reports.append(result.error)
                log.error("gang %s failed: %s", self.name, result.error.summary)
                self._update(failures=[r.summary for r in reports])
            action = policy.exited(result.exit_code, result.result is not None,
                                   result.error.summary if result.error else "")
            if isinstance(action, Wait):
                if self.cancel.wait(min(action.seconds, max(0.0, deadline - time.monotonic()))):
                    break
                action = (policy.timed_out(timeout_s, "the job timeout (--timeout)")
                          if time.monotonic() >= deadline else policy.backoff_done())
        if isinstance(action, GiveUp):
            log.error("%s", action.reason)
            result.reason = action.reason
        result.restarts, result.reports = policy.retries, reports
        result.ok = policy.state is State.SUCCEEDED
        self._update(state="done" if result.ok else "failed", restarts=policy.retries)
        return result

    def _run_once(self, job: MpiJob, deadline: float) -> JobResult:
        try:
            code = job.wait(max(0.001, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            job.stop()
            return JobResult(job.proc.returncode if job.proc.returncode is not None else -9,
                             job.stdout(), job.log_tail(1 << 20), timed_out=True)
        except BaseException:  # Ctrl-C: the ranks go first, then the reservation (in release)
            job.stop()
            raise
        return JobResult(code, job.stdout(), job.log_tail(1 << 20), result=job.result(),
                         error=job.failure(code) if code else None)
