"""Run a gang of serving ranks under mpirun and keep it alive (the driver of SupervisionPolicy).

``ServingGang.start()`` launches ``mpirun -n N python -m mpi_workers.serve`` with the next
endpoint generation and waits until rank 0 publishes it. A watcher thread waits for mpirun to
exit; if it failed, the failure is reported (rank, host, pid, exit code, stderr tail), and after a
jittered backoff the gang is launched again with a new generation, up to ``max_restarts`` times.
``stop()`` sends SIGTERM to the whole process group (ranks finish the batch in hand and exit).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from framestream.errors import DeadlineExceeded, FramestreamError
from launcher.errors import RankFailed
from launcher.mpirun import GangLaunch, MpiJob, start_ranks
from launcher.policy import GiveUp, Launch, State, SupervisionPolicy, Terminate, Wait
from framestream import endpoints

log = logging.getLogger(__name__)

class ServingGang:
    def __init__(self, ranks: int, serve_args: Sequence[str], endpoints_file: Path, log_dir: Path,
                 policy: SupervisionPolicy | None = None, start_timeout_s: float = 120.0,
                 hostfile: Path | None = None, launch: GangLaunch | None = None,
                 on_change: Callable[["ServingGang"], None] | None = None,
                 start_timeout_setting: str = "FRAMESTREAM_LAUNCHER_LAUNCH_TIMEOUT_S") -> None:
        """``launch``: start the ranks on a Ray reservation (:mod:`launcher.api`) instead of on
        this machine; ``on_change``: called after every launch, publication and failure;
        ``start_timeout_setting``: the setting a publication timeout names (the caller's)."""
        if launch is not None and launch.layout.ranks != ranks:
            raise ValueError(f"the reservation holds {launch.layout.ranks} ranks, not {ranks}")
        self.ranks = ranks
        self.serve_args = list(serve_args)
        self.endpoints_file = Path(endpoints_file)
        self.log_dir = Path(log_dir)
        self.policy = policy or SupervisionPolicy()
        self.start_timeout_s = start_timeout_s
        self.start_timeout_setting = start_timeout_setting
        self.hostfile = hostfile
        self.launch = launch
        self.on_change = on_change
        self.reports: list[RankFailed] = []
        self.error: FramestreamError | None = None
        self._job: MpiJob | None = None
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._watcher: threading.Thread | None = None

    @property
    def restarts(self) -> int:
        return self.policy.restarts

    @property
    def generation(self) -> int:
        return self.policy.generation

    def _log_path(self, generation: int) -> Path:
        return self.log_dir / f"ranks-gen{generation}.log"

    def _launch(self, generation: int) -> bool:
        """Start mpirun for ``generation`` and wait until it publishes its endpoints.

        False if the ranks exited before publishing (the watcher then sees the exit) or a stop
        came in; DeadlineExceeded if they neither published nor exited in time.
        """
        self.log_dir.mkdir(parents=True, exist_ok=True)
        args = [*self.serve_args, "--endpoints-file", str(self.endpoints_file),
                "--generation", str(generation)]
        where = {"launch": self.launch} if self.launch else {"hostfile": self.hostfile}
        job = start_ranks("mpi_workers.serve", args, n=self.ranks, **where,
                          run_dir=self.log_dir / f"gen{generation}",
                          output=self._log_path(generation))
        proc = job.proc
        with self._lock:
            self._job = job
            if self._stopped.is_set():
                job.stop()
                return False
        log.info("launched %d ranks, generation %d (pid %d, log %s)", self.ranks, generation,
                 proc.pid, self._log_path(generation))
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            current = endpoints.read(self.endpoints_file)
            if current is not None and current.generation >= generation:
                with self._lock:
                    if self.policy.state is State.LAUNCHING:
                        self.policy.published(generation)
                self._changed()
                return True
            if proc.poll() is not None or self._stopped.is_set():
                return False
            if time.monotonic() > deadline:
                job.stop()
                raise DeadlineExceeded("the rank launcher", f"{self.ranks} ranks of generation "
                                       f"{generation} to publish endpoints", self.start_timeout_s,
                                       self.start_timeout_setting,
                                       detail=self._tail(generation))
            self._stopped.wait(0.1)  # rank 0 writes a file: poll it, a stop ends the wait

    def _changed(self) -> None:
        if self.on_change is not None:
            try:
                self.on_change(self)
            except Exception:  # a status writer must never take the supervisor down
                log.exception("on_change hook failed")

    def _tail(self, generation: int, chars: int = 3000) -> str:
        try:
            return self._log_path(generation).read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    def start(self) -> endpoints.EndpointSet:
        """Launch the first generation; raise with the ranks' report if it does not come up."""
        previous = endpoints.read(self.endpoints_file)
        action = self.policy.start(previous.generation if previous else 0)
        assert isinstance(action, Launch)
        if not self._launch(action.generation):
            if self._job is None:
                raise FramestreamError("the ranks were stopped before they came up")
            raise self._job.failure(self._job.wait())
        self._watcher = threading.Thread(target=self._watch, name="rank-supervisor", daemon=True)
        self._watcher.start()
        current = endpoints.read(self.endpoints_file)
        assert current is not None
        return current

    def _watch(self) -> None:
        while True:
            job = self._job
            assert job is not None
            code = job.wait()
            with self._lock:
                generation = self.policy.generation
                report = job.failure(code, endpoints.read(self.endpoints_file)) if code else None
                if report and self.policy.state is not State.STOPPING:
                    self.reports.append(report)
                    log.error("ranks of generation %d failed: %s", generation, report.summary)
                action = self.policy.exited(code, report.summary if report else "")
            self._changed()
            if isinstance(action, GiveUp):
                self.error = FramestreamError(action.reason)
                log.error("%s", action.reason)
                return
            if not isinstance(action, Wait):
                return  # stopped, or the ranks shut down cleanly
            self._stopped.wait(action.seconds)
            with self._lock:
                launch = self.policy.backoff_done()
            if not isinstance(launch, Launch):
                return
            try:
                self._launch(launch.generation)
            except FramestreamError as exc:
                log.error("relaunch of generation %d did not come up: %s", launch.generation, exc)

    def stop(self, timeout: float = 30.0) -> None:
        with self._lock:
            self._stopped.set()
            action = self.policy.stop()
            job = self._job
        if isinstance(action, Terminate) and job is not None:
            job.stop(grace=timeout)
        if self._watcher is not None:
            self._watcher.join(timeout)
