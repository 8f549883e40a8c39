"""Build and run ``mpirun`` command lines for the project's one MPI (Debian's OpenMPI).

Everything a caller needs to start ranks on this machine or on a hostfile: the root-permission
variables OpenMPI wants, ``--oversubscribe`` past the core count, no core binding (ranks size their
own thread pools), and the venv's Python so ranks import the same packages as the driver.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from framestream.errors import DeadlineExceeded, ServiceError
from launcher.errors import RankFailed

if TYPE_CHECKING:
    from launcher.layout import MpiLayout


def mpirun_path() -> str:
    path = shutil.which("mpirun")
    if not path:
        raise ServiceError("no `mpirun` on PATH: run `make setup` (installs Debian's openmpi-bin)")
    return path


def mpi_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for mpirun: ours plus what OpenMPI needs here.

    It always holds a control token for the gang (``FRAMESTREAM_CONTROL_TOKEN``): the one in
    ``extra`` when the caller will send control ops (SHUTDOWN, END) itself, else a fresh random
    one nobody else knows. It is never taken from our own environment, which Spark executors
    inherit, and it is put only into mpirun's environment, never into ours or on a command line.
    """
    from framestream.wire import CONTROL_TOKEN_ENV, new_control_token

    env = dict(os.environ)
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


def die_with_parent() -> None:
    """``preexec_fn``: the child gets SIGTERM when the process that started it dies (Linux), so
    ranks never outlive a driver that was killed with SIGKILL."""
    import ctypes

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)


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

        names = set(self.layout.env) | {CONTROL_TOKEN_ENV}  # ranks on other nodes
        if "PYTHONPATH" in os.environ:  # the user's own, as local ranks see it; never the checkout
            names.add("PYTHONPATH")
        names |= {k for k in os.environ if k.startswith("FRAMESTREAM_")}
        return sorted(names)

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        return mpi_env({**self.layout.env, **(extra or {})})


def run_mpi(n: int, module: str, args: Sequence[str] = (), *, timeout: float,
            env: Mapping[str, str] | None = None, **kw: object) -> subprocess.CompletedProcess[str]:
    """Run an MPI job to completion within ``timeout`` seconds; raise RankFailed on failure.

    mpirun runs in its own process group, so a timeout takes down every rank with it.
    """
    cmd = mpirun_cmd(n, module, args, **kw)  # type: ignore[arg-type]
    proc = subprocess.Popen(cmd, env=mpi_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out, err = proc.communicate()
        raise DeadlineExceeded("run_mpi", f"`mpirun -n {n} python -m {module}` to finish",
                               timeout, detail=err[-2000:]) from None
    if proc.returncode != 0:
        raise RankFailed(proc.returncode, err[-4000:])
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


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
