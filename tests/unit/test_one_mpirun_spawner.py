"""One module starts mpirun (issue 15, item 4): :mod:`launcher.mpirun`. Every other place -- the
launcher's gangs, the jobs, the benchmarks, the tests' helpers -- goes through its API
(``start_ranks``, ``run_mpi``), so ranks always get the per-launch result/error folder, the
control token only in their environment, their own process group and die-with-parent.

The check reads the code (not docstrings): a file that both spawns a process and builds an mpirun
command line (``mpirun_cmd``, ``mpirun_path``, ``mpi_env``, a ``GangLaunch``'s ``command``, or a
literal ``"mpirun"`` argv) is a second spawner.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ROOTS = ("framestream", "models", "etl", "mpi_workers", "launcher", "jobs", "status", "stack",
         "bench", "tests")
THE_SPAWNER = Path("launcher/mpirun.py")

_SPAWNS = {"Popen", "run", "call", "check_call", "check_output", "system", "posix_spawn",
           "posix_spawnp", "create_subprocess_exec", "create_subprocess_shell", "getoutput",
           "getstatusoutput"} | {f"exec{s}" for s in ("l", "le", "lp", "lpe", "v", "ve", "vp", "vpe")} \
    | {f"spawn{s}" for s in ("l", "le", "lp", "lpe", "v", "ve", "vp", "vpe")}
_SPAWN_MODULES = {"subprocess", "os", "asyncio", "sp"}
_BUILDERS = {"mpirun_cmd", "mpirun_path", "mpi_env"}


def _spawns(tree: ast.AST) -> list[int]:
    """Lines that call ``subprocess.X`` / ``os.X`` process starters (or a bare imported one)."""
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if (isinstance(f, ast.Attribute) and f.attr in _SPAWNS and isinstance(f.value, ast.Name)
                and f.value.id in _SPAWN_MODULES):
            lines.append(node.lineno)
        elif isinstance(f, ast.Name) and f.id in {"Popen", "check_call", "check_output"}:
            lines.append(node.lineno)
    return lines


def _mpirun_builders(tree: ast.AST) -> list[int]:
    """Lines that build an mpirun command line or name the executable as an argv element."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in _BUILDERS:
            lines.append(node.lineno)
        elif isinstance(node, ast.Attribute) and node.attr in _BUILDERS:
            lines.append(node.lineno)
        elif isinstance(node, ast.alias) and node.name in _BUILDERS:
            lines.append(getattr(node, "lineno", 0))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "command" and isinstance(node.func.value, (ast.Name, ast.Attribute))
              and "launch" in ast.unparse(node.func.value)):
            lines.append(node.lineno)  # GangLaunch.command(...): a full mpirun argv
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and (
                node.value == "mpirun" or node.value.endswith("/mpirun")):
            lines.append(node.lineno)
    return lines


def second_spawners(files: dict[str, str]) -> dict[str, tuple[list[int], list[int]]]:
    """{path: (spawn lines, mpirun lines)} for every file, other than the one spawner, doing both."""
    found = {}
    for path, source in files.items():
        if Path(path) == THE_SPAWNER:
            continue
        tree = ast.parse(source, filename=path)
        spawns, builders = _spawns(tree), _mpirun_builders(tree)
        if spawns and builders:
            found[path] = (spawns, builders)
    return found


def _tree() -> dict[str, str]:
    files = {}
    for root in ROOTS:
        for p in sorted((REPO / root).rglob("*.py")):
            files[str(p.relative_to(REPO))] = p.read_text()
    return files


def test_only_launcher_mpirun_starts_mpirun() -> None:
    found = second_spawners(_tree())
    assert not found, ("these files start mpirun themselves; go through launcher.mpirun "
                       "(start_ranks / run_mpi) instead: " + "; ".join(
                           f"{p} (spawns at lines {s}, mpirun at lines {b})"
                           for p, (s, b) in sorted(found.items())))


def test_the_check_sees_each_way_of_spawning_mpirun() -> None:
    """The checker itself: each of these is a second spawner; docstrings and plain API use are not."""
    bad = {
        "a.py": "import subprocess\nfrom launcher.mpirun import mpirun_cmd\n"
                "subprocess.Popen(mpirun_cmd(2, 'm'))\n",
        "b.py": "import subprocess\nsubprocess.run(['mpirun', '-n', '2', 'python', '-m', 'x'])\n",
        "c.py": "import os\nos.execvp('/usr/bin/mpirun', ['mpirun'])\n",
        "d.py": "from subprocess import Popen\n\ndef f(launch):\n"
                "    return Popen(launch.command('m'), env=launch.env())\n",
        "e.py": "import subprocess\nimport launcher.mpirun as m\n"
                "subprocess.Popen(m.mpirun_cmd(1, 'x'), env=m.mpi_env())\n",
    }
    assert sorted(second_spawners(bad)) == sorted(bad)
    fine = {
        "doc.py": '"""Runs ``mpirun -n 2 python -m x``."""\nimport subprocess\n'
                  "subprocess.run(['ls'])\n",
        "api.py": "from launcher.mpirun import run_mpi\nrun_mpi(2, 'x', timeout=5)\n",
        str(THE_SPAWNER): "import subprocess\nsubprocess.Popen(['mpirun'])\n",
    }
    assert second_spawners(fine) == {}
