"""framestream is an installable project: no product file edits sys.path or hands out a
PYTHONPATH, and a wheel of it holds the packages, their data and the commands, without tests/
or bench/."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
PACKAGES = PYPROJECT["tool"]["setuptools"]["packages"]


def _sys_path_edits(tree: ast.AST) -> list[int]:
    """Lines that change sys.path: sys.path.insert/append/extend/... or sys.path = ..."""
    lines = []
    for node in ast.walk(tree):
        target = None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            target = node.func.value
        elif isinstance(node, (ast.Assign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            target = next((t for t in targets if isinstance(t, ast.Attribute)), None)
        if (isinstance(target, ast.Attribute) and target.attr == "path"
                and isinstance(target.value, ast.Name) and target.value.id == "sys"):
            lines.append(node.lineno)
    return sorted(lines)


def test_no_product_file_changes_sys_path_or_names_pythonpath() -> None:
    found = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            source = path.read_text()
            rel = path.relative_to(REPO)
            found += [f"{rel}:{line}: changes sys.path" for line in _sys_path_edits(ast.parse(source))]
            found += [f"{rel}:{line}: sets PYTHONPATH" for line in _pythonpath_sets(ast.parse(source))]
    assert not found, "\n".join(found)


def _pythonpath_sets(tree: ast.AST) -> list[int]:
    """Lines that give a process a PYTHONPATH: env["PYTHONPATH"] = ..., {"PYTHONPATH": ...},
    f(PYTHONPATH=...), spark.executorEnv.PYTHONPATH. Forwarding the user's own is not one."""
    def is_name(node: ast.AST | None) -> bool:
        return isinstance(node, ast.Constant) and node.value == "PYTHONPATH"

    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store) and is_name(node.slice):
            lines.append(node.lineno)
        elif isinstance(node, ast.Dict) and any(is_name(k) for k in node.keys):
            lines.append(node.lineno)
        elif isinstance(node, ast.keyword) and node.arg == "PYTHONPATH":
            lines.append(node.value.lineno)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                ("executorEnv.PYTHONPATH" in node.value or "PYTHONPATH=" in node.value):
            lines.append(node.lineno)
    return sorted(lines)


def test_the_sys_path_check_finds_an_edit() -> None:  # the check above is not vacuous
    assert _sys_path_edits(ast.parse("import sys\nsys.path.insert(0, 'x')\n")) == [2]
    assert _sys_path_edits(ast.parse("import sys\nsys.path = ['x']\n")) == [2]
    assert _sys_path_edits(ast.parse("import sys\nsys.argv.append('x')\n")) == []
    assert _pythonpath_sets(ast.parse("env['PYTHONPATH'] = 'x'\nd = dict(PYTHONPATH='x')\n"
                                      "e = {'PYTHONPATH': 'x'}\n")) == [1, 2, 3]
    assert _pythonpath_sets(ast.parse("if 'PYTHONPATH' in env:\n    names.add('PYTHONPATH')\n")) == []


def test_every_command_names_a_callable_main() -> None:
    import importlib

    for name, target in PYPROJECT["project"]["scripts"].items():
        module, _, attr = target.partition(":")
        assert module.split(".")[0] in PACKAGES, name
        assert callable(getattr(importlib.import_module(module), attr)), name


@pytest.mark.slow
def test_a_wheel_installs_the_packages_their_data_and_commands(tmp_path: Path) -> None:
    src = tmp_path / "src"  # a copy, so the build writes nothing into the checkout
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for package in PACKAGES + ["tests", "bench"]:  # tests/ and bench/ are there, and left out
        shutil.copytree(REPO / package, src / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "results"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"),
                    str(src)], check=True, timeout=300, capture_output=True)
    wheel = next((tmp_path / "dist").glob("framestream-*.whl"))
    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True,
                   timeout=300, capture_output=True)
    assert not (site / "tests").exists() and not (site / "bench").exists()
    probe = """
import importlib, json, sys
mods = [importlib.import_module(p) for p in sys.argv[1:]]
from status.app import STATIC
from etl.session import LOG4J_PROFILE
from framestream.paths import state_dir
print(json.dumps({"files": [m.__file__ for m in mods], "index": (STATIC / "index.html").is_file(),
                  "log4j": LOG4J_PROFILE.is_file(), "state": str(state_dir())}))
"""
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", probe, *PACKAGES], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert all(f.startswith(str(site)) for f in got["files"]), got["files"]  # not the checkout
    assert got["index"] and got["log4j"]
    assert not got["state"].startswith(str(site)), got["state"]  # state never in site-packages
    entry_points = next(site.glob("framestream-*.dist-info")) / "entry_points.txt"
    assert "framestream-stream = jobs.submit:stream" in entry_points.read_text()
