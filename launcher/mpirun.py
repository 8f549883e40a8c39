"""The one module that starts ``mpirun`` (the project's one MPI: Debian's OpenMPI).

:func:`start_ranks` starts ranks (on this machine, a hostfile or a Ray reservation's
:class:`GangLaunch`) and returns an :class:`MpiJob`; :func:`run_mpi` runs a job to completion.
Every launch gets a fresh 0700 folder for the ranks' result and error files
(:mod:`framestream.run_files`), which is how results and failures come back. Nothing else in the
tree spawns mpirun (tests/unit/test_one_mpirun_spawner.py checks).

Everything a caller needs to start ranks on this machine or on a hostfile: the root-permission
variables OpenMPI wants, ``--oversubscribe`` past the core count, no core binding (ranks size their
own thread pools), and the venv's Python so ranks import the same packages as the driver.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from framestream import run_files
from framestream.errors import DeadlineExceeded, ServiceError
from framestream.paths import state_dir
from launcher.errors import RankFailed

if TYPE_CHECKING:
    from framestream.endpoints import EndpointSet
    from launcher.layout import MpiLayout

log = logging.getLogger(__name__)


def mpirun_path() -> str:
    path = shutil.which("mpirun")
    if not path:
        raise ServiceError("no `mpirun` on PATH: run `make setup` (installs Debian's openmpi-bin)")
    return path


def mpirun_version() -> str:
    """OpenMPI's version (``mpirun --version``), "missing" without mpirun, "unknown" when unsaid."""
    try:
        out = subprocess.run([mpirun_path(), "--version"], capture_output=True, text=True,
                             timeout=20, stdin=subprocess.DEVNULL)
    except (ServiceError, OSError, subprocess.TimeoutExpired):
        return "missing"
    m = re.search(r"Open MPI\)? ([\d.]+)", out.stdout + out.stderr)
    return m.group(1) if m else "unknown"


#: The framestream settings a rank reads (mpi_workers/, models/, the jobs run under mpirun):
#: every other ``FRAMESTREAM_*`` variable stays out of mpirun's environment and out of what it
#: exports to other nodes. Ranks open no Kafka client (Kafka retraining feeds them over ZeroMQ),
#: hold no executor's CURVE secret, and need nothing of Spark, Ray, the cron or the status page.
#: ``tests/unit/test_rank_settings.py`` finds every setting the rank code names and checks it is
#: listed here. Variables outside ``FRAMESTREAM_*`` (PATH, HOME, CUDA's, OpenMPI's) pass as before.
RANK_SECTIONS = ("FRAMESTREAM_SERVE_", "FRAMESTREAM_TRAIN_", "FRAMESTREAM_REGISTRY_",
                 "FRAMESTREAM_KEYS_")
RANK_NAMES = frozenset({
    "FRAMESTREAM_STATE", "FRAMESTREAM_CACHE", "FRAMESTREAM_FASHION_MNIST_DIR",
    "FRAMESTREAM_LOG_LEVEL", "FRAMESTREAM_MPI_RENDEZVOUS_HOST", "FRAMESTREAM_GANG_RANK_ENV",
    "FRAMESTREAM_CONTROL_TOKEN", run_files.RUN_DIR_ENV,
})


def rank_may_see(name: str) -> bool:
    """Whether the environment variable ``name`` may reach ranks (see :data:`RANK_SECTIONS`)."""
    return (not name.startswith("FRAMESTREAM_") or name.startswith(RANK_SECTIONS)
            or name in RANK_NAMES)


def mpi_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for mpirun: ours plus what OpenMPI needs here.

    It always holds a control token for the gang (``FRAMESTREAM_CONTROL_TOKEN``): the one in
    ``extra`` when the caller will send control ops (SHUTDOWN, END) itself, else a fresh random
    one nobody else knows. It is never taken from our own environment, which Spark executors
    inherit, and it is put only into mpirun's environment, never into ours or on a command line.
    """
    from framestream.wire import CONTROL_TOKEN_ENV, new_control_token

    env = {k: v for k, v in os.environ.items() if rank_may_see(k)}
    env.pop(CONTROL_TOKEN_ENV, None)
    if os.geteuid() == 0:
        env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
        env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    # Cross-memory-attach needs ptrace rights that containers often lack; shared memory copy is fine.
    env.setdefault("OMPI_MCA_btl_vader_single_copy_mechanism", "none")
    # Ranks import the project's packages from the installed project (the venv's), not a path.
    env.update(extra or {})
    env.setdefault(CONTROL_TOKEN_ENV, new_control_token())
    return env


def die_with_parent(cmd: Sequence[str]) -> list[str]:
    """``cmd`` run so that it gets SIGTERM when the thread that started it dies (Linux's
    parent-death signal), so ranks never outlive a driver that was killed with SIGKILL.

    util-linux's ``setpriv`` sets the signal and then execs ``cmd``; no Python runs in the
    child between fork and exec. (A ``preexec_fn`` did, and CPython then tears down the other
    threads' states in the child: py4j's connections held by those threads were closed there
    with ``shutdown()``, which also cut the Spark driver's own sockets. See
    ``etl/py4j_fork.py``.) Without ``setpriv`` the command runs as is."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        log.warning("setpriv (util-linux) not found: ranks may outlive a driver killed with "
                    "SIGKILL")
        return list(cmd)
    return [setpriv, "--pdeathsig", "TERM", "--", *cmd]


def mpirun_cmd(n: int, module: str, args: Sequence[str] = (), *, hostfile: Path | None = None,
               python: str | None = None, oversubscribe: bool | None = None,
               mca: Mapping[str, str] | None = None, tag_output: bool = False,
               exports: Sequence[str] = (), map_by: str | None = None) -> list[str]:
    """``mpirun -n N ... python -m module args``. Oversubscribes when N exceeds the local cores.

    ``exports``: names of environment variables mpirun passes to every rank (``-x``), which
    ranks on other nodes need; ``map_by``: OpenMPI's ``--map-by`` (``slot`` fills the hostfile's
    nodes in order).
    """
    if n < 1:
        raise ValueError(f"ranks must be >= 1, got {n}")
    if oversubscribe is None:
        oversubscribe = hostfile is None and n > (os.cpu_count() or 1)
    cmd = [mpirun_path(), "-n", str(n), "--bind-to", "none"]
    if hostfile is not None:
        cmd += ["--hostfile", str(hostfile)]
    if map_by:
        cmd += ["--map-by", map_by]
    for name in exports:
        cmd += ["-x", name]
    if oversubscribe:
        cmd.append("--oversubscribe")
    if tag_output:
        cmd.append("--tag-output")
    for key, value in (mca or {}).items():
        cmd += ["--mca", key, value]
    return cmd + [python or sys.executable, "-m", module, *args]


@dataclass(frozen=True)
class GangLaunch:
    """How to start ranks on a reservation: its layout and the hostfile written for it.

    ``command`` runs each rank through :mod:`launcher.rank_exec` so it gets its own bundle's
    environment; ``env`` is mpirun's environment (what ``-x`` exports comes from it).
    """

    layout: "MpiLayout"
    hostfile: Path

    def command(self, module: str, args: Sequence[str] = (), *, python: str | None = None,
                tag_output: bool = False) -> list[str]:
        return mpirun_cmd(self.layout.ranks, "launcher.rank_exec", [module, *args],
                          hostfile=self.hostfile, python=python, oversubscribe=False,
                          mca=self.layout.mca, tag_output=tag_output,
                          exports=self.exports(), map_by="slot")

    def exports(self) -> list[str]:
        from framestream.wire import CONTROL_TOKEN_ENV

        # what ranks on other nodes need too (their run files stay on their node)
        names = set(self.layout.env) | {CONTROL_TOKEN_ENV, run_files.RUN_DIR_ENV}
        if "PYTHONPATH" in os.environ:  # the user's own, as local ranks see it; never the checkout
            names.add("PYTHONPATH")
        names |= {k for k in os.environ if k.startswith("FRAMESTREAM_") and rank_may_see(k)}
        return sorted(names)

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        return mpi_env({**self.layout.env, **(extra or {})})


class MpiJob:
    """One running ``mpirun`` (in its own process group) and its per-launch folder.

    The folder (mode 0700) is named to the ranks in ``FRAMESTREAM_RUN_DIR``: rank 0 writes its
    result there, a raising rank its error file (:mod:`framestream.run_files`). mpirun's stdout
    and stderr go to files there too (or to ``output``), for humans; results and errors are read
    from the run files, never parsed out of them.
    """

    def __init__(self, cmd: list[str], proc: subprocess.Popen[bytes], run_dir: Path,
                 stdout_path: Path, stderr_path: Path) -> None:
        self.cmd, self.proc, self.run_dir = cmd, proc, run_dir
        self.stdout_path, self.stderr_path = stdout_path, stderr_path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> int | None:
        return self.proc.poll()

    def wait(self, timeout: float | None = None) -> int:
        """mpirun's exit code; ``subprocess.TimeoutExpired`` when it is still running."""
        return self.proc.wait(timeout)

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM every rank (the process group), SIGKILL after ``grace`` seconds."""
        if self.proc.poll() is None:
            kill_group(self.proc, grace)  # type: ignore[arg-type]

    def stdout(self) -> str:
        return _read(self.stdout_path)

    def log_tail(self, chars: int = 4000) -> str:
        """The end of mpirun's stderr (with stdout, when both go to one file)."""
        return _read(self.stderr_path)[-chars:]

    def result(self) -> dict[str, Any] | None:
        """Rank 0's result file; None when it wrote none (or an unreadable one, logged)."""
        try:
            return run_files.read_result(self.run_dir)
        except (OSError, ValueError) as exc:
            log.error("result file of %s unreadable: %s", self.run_dir, exc)
            return None

    def failure(self, code: int, published: "EndpointSet | None" = None) -> RankFailed:
        """What the caller sees of a failed launch: the first failing rank's error file (rank,
        host, pid, exception, traceback) with mpirun's exit code; without one (a rank killed by
        a signal writes nothing) mpirun's own notice of the dead rank; else the exit code."""
        tail = self.log_tail()
        errors = run_files.read_errors(self.run_dir)
        if errors:
            first = errors[0]
            others = sorted({e.rank for e in errors[1:]})
            return RankFailed(code, tail, first.rank, first.host, first.pid,
                              message=first.message, callstack=first.callstack,
                              also_failed=others)
        return mpirun_notice(code, tail, published)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def new_run_dir(parent: Path | None = None, prefix: str = "run-") -> Path:
    """A fresh folder only we can read (0700), for one launch's run files."""
    if parent is not None:
        Path(parent).mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))


def start_ranks(module: str, args: Sequence[str] = (), *, n: int | None = None,
                launch: GangLaunch | None = None, env: Mapping[str, str] | None = None,
                run_dir: Path | None = None, output: Path | None = None,
                pass_fds: Sequence[int] = (), cwd: Path | None = None,
                **cmd_kw: Any) -> MpiJob:
    """Start ``mpirun ... python -m module args``: the project's one way to start ranks.

    On a Ray reservation (``launch``) or on this machine / a hostfile (``n`` and
    :func:`mpirun_cmd`'s keywords). ``env``: extra variables for mpirun and the ranks (a
    ``FRAMESTREAM_CONTROL_TOKEN`` here is the caller's own; else a fresh one, see
    :func:`mpi_env`). ``run_dir``: the launch's folder (made 0700; default: a new temporary one
    under the state dir); ``output``: one file for mpirun's stdout and stderr (default:
    ``stdout.log`` and ``mpirun.log`` in the run folder). mpirun gets its own process group and
    SIGTERM when this process dies.
    """
    if run_dir is None:
        run_dir = new_run_dir(state_dir() / "runs")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    run_dir.chmod(0o700)
    run_files.clear(run_dir)  # a reused folder (a log dir, generation 1 again) starts empty
    extra = {**(env or {}), run_files.RUN_DIR_ENV: str(run_dir)}
    if launch is not None:
        cmd, full_env = launch.command(module, args, **cmd_kw), launch.env(extra)
    else:
        if n is None:
            raise ValueError("start_ranks needs n (ranks on this machine) or launch (a gang)")
        cmd, full_env = mpirun_cmd(n, module, args, **cmd_kw), mpi_env(extra)
    if output is not None:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        stdout_path = stderr_path = Path(output)
    else:
        stdout_path, stderr_path = run_dir / "stdout.log", run_dir / "mpirun.log"
    with contextlib.ExitStack() as files:
        out = files.enter_context(open(stdout_path, "ab"))
        err = out if stderr_path == stdout_path else files.enter_context(open(stderr_path, "ab"))
        proc = subprocess.Popen(die_with_parent(cmd), env=full_env, stdout=out, stderr=err,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                pass_fds=tuple(pass_fds), cwd=cwd)
    log.debug("mpirun pid %d: %s (run files in %s)", proc.pid, " ".join(cmd), run_dir)
    return MpiJob(cmd, proc, run_dir, stdout_path, stderr_path)


@dataclass(frozen=True)
class MpiOutcome:
    """A job run to completion by :func:`run_mpi`: rank 0's result file and mpirun's output."""

    cmd: list[str]
    returncode: int
    result: dict[str, Any] | None
    stdout: str
    stderr: str


def run_mpi(n: int, module: str, args: Sequence[str] = (), *, timeout: float,
            env: Mapping[str, str] | None = None, **kw: Any) -> MpiOutcome:
    """Run an MPI job on this machine to completion within ``timeout`` seconds.

    Raises :class:`RankFailed` (the first failing rank's error file: rank, host, pid, exception,
    traceback) when it fails, :class:`DeadlineExceeded` when it runs out of time (every rank is
    stopped first). Its run folder is removed once read.
    """
    run_dir = new_run_dir(state_dir() / "runs")
    try:
        job = start_ranks(module, args, n=n, env=env, run_dir=run_dir, **kw)
        try:
            code = job.wait(timeout)
        except subprocess.TimeoutExpired:
            job.stop()
            raise DeadlineExceeded("run_mpi", f"`mpirun -n {n} python -m {module}` to finish",
                                   timeout, detail=job.log_tail(2000)) from None
        except BaseException:
            job.stop()
            raise
        if code != 0:
            raise job.failure(code)
        return MpiOutcome(job.cmd, code, job.result(), job.stdout(), job.log_tail(1 << 20))
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


_NOTICED = re.compile(r"process rank (\d+) with PID (\d+) on node (\S+) exited on signal (\d+)")


def mpirun_notice(code: int, log_tail: str,
                  published: "EndpointSet | None" = None) -> RankFailed:
    """A failure no rank could write down (killed by a signal): mpirun's own notice names the
    rank, pid and host ("process rank 1 with PID 42 on node n exited on signal 9"). OpenMPI 4
    often says "PID 0"; the pid then comes from the endpoint set the ranks published."""
    m = _NOTICED.search(log_tail)
    if not m:
        return RankFailed(code, log_tail)
    rank, pid, host, sig = int(m[1]), int(m[2]), m[3], int(m[4])
    if published is not None and not pid:
        known = next((r for r in published.ranks if r.rank == rank), None)
        pid, host = (known.pid, known.host) if known else (pid, host)
    return RankFailed(code, log_tail, rank, host, pid, signal=sig)


def kill_group(proc: subprocess.Popen[str], grace: float = 5.0) -> None:
    """SIGTERM the process group of ``proc`` (mpirun forwards it to the ranks), SIGKILL after
    ``grace`` seconds."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(grace)
    except ProcessLookupError:
        pass
