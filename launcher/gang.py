"""Run a gang of serving ranks under mpirun and keep it alive (the driver of SupervisionPolicy).

``ServingGang.start()`` launches ``mpirun -n N python -m mpi_workers.serve`` with the next
endpoint generation and waits until rank 0 publishes it. A watcher thread waits for mpirun to
exit; if it failed, the failure is reported (rank, host, pid, exit code, stderr tail), and after a
jittered backoff the gang is launched again with a new generation, up to ``max_restarts`` times.
``stop()`` sends SIGTERM to the whole process group (ranks finish the batch in hand and exit).
"""

from __future__ import annotations

import logging
import re
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from framestream.errors import DeadlineExceeded, FramestreamError
from launcher.errors import RankFailed
from launcher.mpirun import GangLaunch, die_with_parent, kill_group, mpi_env, mpirun_cmd
from launcher.policy import GiveUp, Launch, State, SupervisionPolicy, Terminate, Wait
from framestream import endpoints

log = logging.getLogger(__name__)

_NOTICED = re.compile(r"process rank (\d+) with PID (\d+) on node (\S+) exited on signal (\d+)")
_ABORTED = re.compile(r"\[rank (\d+) on (\S+) pid (\d+)\] failed")


def parse_failure(code: int, stderr_tail: str,
                  published: endpoints.EndpointSet | None = None) -> RankFailed:
    """Turn mpirun's exit and stderr into a report naming the rank, host and pid when known.

    OpenMPI 4 often says "PID 0" for a killed rank; the pid then comes from the endpoint set the
    ranks published.
    """
    for pattern, order in ((_NOTICED, ("rank", "pid", "host")), (_ABORTED, ("rank", "host", "pid"))):
        m = pattern.search(stderr_tail)
        if m:
            found = dict(zip(order, m.groups()))
            rank, host, pid = int(found["rank"]), found["host"], int(found["pid"])
            if published is not None and not pid:
                known = next((r for r in published.ranks if r.rank == rank), None)
                pid, host = (known.pid, known.host) if known else (pid, host)
            return RankFailed(code, stderr_tail, rank, host, pid)
    return RankFailed(code, stderr_tail)


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
        self._proc: subprocess.Popen[bytes] | None = None
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
        if self.launch is not None:
            cmd, env = self.launch.command("mpi_workers.serve", args), self.launch.env()
        else:
            cmd, env = mpirun_cmd(self.ranks, "mpi_workers.serve", args, hostfile=self.hostfile), mpi_env()
        with open(self._log_path(generation), "wb") as out:
            proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    preexec_fn=die_with_parent)
        with self._lock:
            self._proc = proc
            if self._stopped.is_set():
                kill_group(proc)  # type: ignore[arg-type]
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
                kill_group(proc)  # type: ignore[arg-type]
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
            code = self._proc.wait() if self._proc else -1
            raise parse_failure(code, self._tail(action.generation))
        self._watcher = threading.Thread(target=self._watch, name="rank-supervisor", daemon=True)
        self._watcher.start()
        current = endpoints.read(self.endpoints_file)
        assert current is not None
        return current

    def _watch(self) -> None:
        while True:
            proc = self._proc
            assert proc is not None
            code = proc.wait()
            with self._lock:
                generation = self.policy.generation
                report = parse_failure(code, self._tail(generation),
                                       endpoints.read(self.endpoints_file)) if code else None
                if report and self.policy.state is not State.STOPPING:
                    self.reports.append(report)
                    log.error("ranks of generation %d failed: %s", generation,
                              str(report).splitlines()[0])
                action = self.policy.exited(code, str(report or ""))
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
            proc = self._proc
        if isinstance(action, Terminate) and proc is not None and proc.poll() is None:
            kill_group(proc, grace=timeout)  # type: ignore[arg-type]
        if self._watcher is not None:
            self._watcher.join(timeout)
