"""Long-lived pipelines a benchmark drives with bursts: framestream itself and the peers.

Every pipeline is started once (its start-up is timed and reported apart), reads its own input
topic, writes predictions to its own output topic, and is stopped at the end. framestream runs as
users run it: ``mpirun -n R python -m mpi_workers.serve`` ranks (started by the launcher's
:func:`launcher.mpirun.start_ranks`, the one way to start ranks) and ``spark-submit
jobs/stream_classify.py --endpoints ...`` attached to them; a grid cell relaunches only the ranks
(a new endpoint generation, which the running stream follows), so Spark starts once per frame set.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import wait_until
from framestream.paths import REPO
from launcher.mpirun import MpiJob, start_ranks
from framestream import endpoints as endpoints_mod

log = logging.getLogger(__name__)
SPARK_SUBMIT = str(Path(sys.executable).parent / "spark-submit")


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable,
               PYTHONPATH=str(REPO), FRAMESTREAM_LOG_LEVEL="INFO")
    env.update(extra)
    return env


def tree(root: int) -> list[int]:
    """``root`` and every process below it."""
    import psutil

    try:
        proc = psutil.Process(root)
        return [root, *(c.pid for c in proc.children(recursive=True))]
    except psutil.NoSuchProcess:
        return []


def signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


class Pausable:
    """SIGSTOP / SIGCONT a pipeline's whole process tree, so a burst can wait on its input topic
    while the pipeline uses no CPU, and idle pipelines take none from the one measured."""

    def processes(self) -> list[int]:
        raise NotImplementedError

    def pause(self) -> None:
        self._paused = self.processes()
        signal_all(self._paused, signal.SIGSTOP)

    def resume(self) -> None:
        signal_all(getattr(self, "_paused", []), signal.SIGCONT)
        self._paused = []


def _stop_group(proc: subprocess.Popen[Any] | None, timeout: float = 60.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    except ProcessLookupError:
        pass


@dataclass
class Ranks(Pausable):
    """``mpirun -n ranks python -m mpi_workers.serve`` publishing at ``endpoints_file``."""

    endpoints_file: Path
    log_dir: Path
    job: MpiJob | None = None
    config: dict[str, Any] = field(default_factory=dict)

    def start(self, ranks: int, max_batch: int, threads: int, version: str,
              device: str = "cpu", timeout: float = 120.0, registry: str | None = None,
              runtime: str = "auto") -> float:
        """Launch and wait for the new generation; returns the seconds it took."""
        self.stop()
        started = time.monotonic()
        before = endpoints_mod.read(self.endpoints_file)
        args = ["--max-batch", str(max_batch), "--threads", str(threads), "--version", version,
                "--endpoints-file", str(self.endpoints_file), "--metrics-port", "-1",
                "--device", device, "--runtime", runtime,
                *(["--registry", registry] if registry else [])]
        log_path = self.log_dir / f"ranks-{ranks}x{threads}-b{max_batch}-{runtime}.log"
        self.log_path = log_path
        self.log_from = log_path.stat().st_size if log_path.exists() else 0  # the log appends
        # the launcher's one way to start ranks, as users run them; its run files beside the log
        self.job = start_ranks("mpi_workers.serve", args, n=ranks, oversubscribe=True,
                               env={"FRAMESTREAM_LOG_LEVEL": "WARNING"}, output=log_path,
                               run_dir=self.log_dir / f"run-{ranks}x{threads}-b{max_batch}")
        old = before.generation if before else 0

        def published() -> bool:
            if self.job is not None and (code := self.job.poll()) is not None:
                raise RuntimeError(f"ranks exited {code}: {self.job.failure(code).summary}; "
                                   f"log {log_path}")
            now = endpoints_mod.read(self.endpoints_file)
            return now is not None and now.generation > old and len(now.ranks) == ranks
        wait_until(published, timeout, f"{ranks} ranks to publish endpoints")
        self.config = {"ranks": ranks, "max_batch": max_batch, "threads": threads,
                       "runtime": runtime, "device": device}
        return time.monotonic() - started

    def runtime_served(self) -> str:
        """What the ranks of this start run: the runtime asked for, or ``eager (fell back: ...)``
        when a rank logged the fallback (models' parity gate or export failed)."""
        asked = self.config.get("runtime", "auto")
        with open(self.log_path, "rb") as f:
            f.seek(self.log_from)
            text = f.read().decode(errors="replace")
        for line in text.splitlines():
            if "serves eager torch instead of" in line:
                return f"eager (fell back: {line.strip()[-200:]})"
        return "onnxruntime" if asked == "auto" and self.config.get("device") == "cpu" else asked

    def processes(self) -> list[int]:
        return tree(self.job.pid) if self.job is not None and self.alive() else []

    def pids(self) -> list[int]:
        current = endpoints_mod.read(self.endpoints_file)
        return [r.pid for r in current.ranks] if current else []

    def alive(self) -> bool:
        return self.job is not None and self.job.poll() is None

    def stop(self) -> None:
        if self.job is not None:
            self.job.stop(grace=20)
            self.job = None


@dataclass
class Framestream(Pausable):
    """The stream job attached to :class:`Ranks` (started first, relaunched per grid cell)."""

    topic_in: str
    topic_out: str
    topic_dlq: str
    version: str
    work: Path
    chunk_frames: int = 256
    credits: int = 2
    trigger_s: float = 0.5
    max_offsets: int = 20000
    registry: str | None = None
    name: str = "framestream"
    proc: subprocess.Popen[Any] | None = None
    startup_s: float | None = None

    def __post_init__(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        self.ranks = Ranks(self.work / "endpoints.json", self.work)

    def start(self, timeout: float = 300.0) -> float:
        if not self.ranks.alive():
            raise RuntimeError("start the ranks before the stream (it attaches to them)")
        ready = self.work / "ready.json"
        ready.unlink(missing_ok=True)
        cmd = [SPARK_SUBMIT, "--conf", "spark.ui.enabled=false",
               str(REPO / "jobs/stream_classify.py"), "--endpoints", str(self.ranks.endpoints_file),
               "--version", self.version, "--topic", self.topic_in,
               "--predictions-topic", self.topic_out, "--dlq-topic", self.topic_dlq,
               "--checkpoint", str(self.work / "checkpoint"), "--starting-offsets", "earliest",
               "--chunk-frames", str(self.chunk_frames), "--credits", str(self.credits),
               "--trigger-interval", str(self.trigger_s),
               "--max-offsets-per-trigger", str(self.max_offsets), "--ready-file", str(ready),
               *(["--registry", self.registry] if self.registry else [])]
        started = time.monotonic()
        with open(self.work / "stream.log", "ab") as out:
            self.proc = subprocess.Popen(cmd, env=child_env(), stdout=out,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         cwd=REPO, start_new_session=True)

        def up() -> bool:
            if not self.alive():
                raise RuntimeError(f"the stream exited; log {self.work / 'stream.log'}")
            return ready.exists()
        wait_until(up, timeout, "the stream to start")
        self.startup_s = time.monotonic() - started
        return self.startup_s

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None and self.ranks.alive()

    def processes(self) -> list[int]:
        return (tree(self.proc.pid) if self.proc is not None else []) + self.ranks.processes()

    def pids(self) -> dict[str, list[int]]:
        """Processes by role: the Spark JVM, its Python driver and workers, the ranks."""
        import psutil

        roles: dict[str, list[int]] = {"spark_jvm": [], "spark_python": [], "ranks": []}
        if self.alive():
            for p in [psutil.Process(self.proc.pid), *psutil.Process(self.proc.pid).children(True)]:
                try:
                    (roles["spark_jvm"] if "java" in p.name() else roles["spark_python"]).append(p.pid)
                except psutil.Error:
                    continue
        roles["ranks"] = self.ranks.pids()
        return roles

    def stop(self) -> None:
        self.resume()
        if self.proc is not None and self.proc.poll() is None:
            import psutil

            drivers = []
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                try:
                    if any("stream_classify.py" in a for a in child.cmdline()):
                        drivers.append(child.pid)
                except psutil.Error:  # gone or a zombie: not the driver we look for
                    continue
            for pid in drivers[:1]:  # SIGTERM the Python driver: it stops the query cleanly
                os.kill(pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                pass
            _stop_group(self.proc, 10)
        self.proc = None
        self.ranks.stop()


@dataclass
class Peer(Pausable):
    """A peer pipeline run as ``python -m bench.peers.<module> ...`` until SIGTERM."""

    name: str
    module: str
    args: list[str]
    work: Path
    proc: subprocess.Popen[Any] | None = None
    startup_s: float | None = None

    def start(self, timeout: float = 300.0) -> float:
        self.work.mkdir(parents=True, exist_ok=True)
        ready = self.work / f"{self.name}.ready"
        ready.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", self.module, *self.args, "--ready-file", str(ready)]
        started = time.monotonic()
        with open(self.work / f"{self.name}.log", "ab") as out:
            self.proc = subprocess.Popen(cmd, env=child_env(FRAMESTREAM_LOG_LEVEL="WARNING"),
                                         stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=REPO,
                                         start_new_session=True)

        def up() -> bool:
            if not self.alive():
                raise RuntimeError(f"peer {self.name} exited; log {self.work / self.name}.log")
            return ready.exists()
        wait_until(up, timeout, f"peer {self.name} to start")
        self.startup_s = time.monotonic() - started
        return self.startup_s

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def processes(self) -> list[int]:
        return tree(self.proc.pid) if self.proc is not None else []

    def stop(self) -> None:
        self.resume()
        extra = self.processes()  # Ray's daemons may leave the process group: end them too
        _stop_group(self.proc, 60)
        signal_all([p for p in extra if p != getattr(self.proc, "pid", None)], signal.SIGTERM)
        self.proc = None
