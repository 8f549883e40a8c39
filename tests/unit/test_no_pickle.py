"""No pickle, eval or exec in framestream's own code, on any wire or file it reads.

A scan of the source (AST, so docstrings that *mention* pickle do not count) for: importing a
pickle-family module (pickle, cPickle, _pickle, cloudpickle, dill, marshal, shelve, joblib), the
builtins ``eval``/``exec``, ``torch.load`` without ``weights_only=True``, ``np.load`` with
``allow_pickle=True``, ``pandas.read_pickle``, and ``yaml.load``/``unsafe_load``. Plus a check
under mpirun that the ranks' object collectives go through msgpack (mpi4py pickles by default).

Engines keep their own internals: Spark ships Python functions to executors with its cloudpickle,
Ray's control plane pickles; tests may build a malicious pickle to prove it is refused. Those are
outside the scan (see README "Reliability and security").
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from framestream.paths import REPO

SCANNED = ("etl", "mpi_workers", "models", "jobs", "framestream", "launcher", "stack", "bench")
PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "cloudpickle", "dill", "marshal", "shelve",
                  "joblib"}


def _kw(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _dotted(node: ast.expr) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def violations(source: str, filename: str = "<string>") -> list[str]:
    """What in ``source`` breaks the no-pickle rule, as ``file:line: what`` strings."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PICKLE_MODULES:
                    found.append(f"{filename}:{line}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            if (node.module or "").split(".")[0] in PICKLE_MODULES:
                found.append(f"{filename}:{line}: from {node.module} import ...")
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            if isinstance(node.func, ast.Name) and name in ("eval", "exec"):
                found.append(f"{filename}:{line}: {name}()")
            elif name.endswith("torch.load"):
                weights_only = _kw(node, "weights_only")
                if not (isinstance(weights_only, ast.Constant) and weights_only.value is True):
                    found.append(f"{filename}:{line}: torch.load without weights_only=True")
            elif name in ("np.load", "numpy.load"):
                allow = _kw(node, "allow_pickle")
                if isinstance(allow, ast.Constant) and allow.value is True:
                    found.append(f"{filename}:{line}: np.load(allow_pickle=True)")
            elif name.endswith("read_pickle") or name in ("yaml.load", "yaml.unsafe_load"):
                found.append(f"{filename}:{line}: {name}()")
    return found


def project_files() -> list[Path]:
    return sorted(p for d in SCANNED for p in (REPO / d).rglob("*.py")
                  if "__pycache__" not in p.parts)


def test_the_scan_catches_every_kind() -> None:
    bad = """
import pickle
import cloudpickle as cp
from dill import loads
import torch, numpy as np, yaml, pandas as pd
eval("1")
exec("x = 1")
torch.load("m.pt")
torch.load("m.pt", weights_only=False)
np.load("a.npy", allow_pickle=True)
pd.read_pickle("f")
yaml.load(open("f"))
"""
    assert len(violations(bad)) == 10, violations(bad)
    good = """
import json, msgpack, torch, numpy as np
model.eval()
torch.load(buf, map_location="cpu", weights_only=True)
np.load("a.npy")
text = "no pickle here: cloudpickle is what Spark uses"
"""
    assert violations(good) == []


def test_project_code_has_no_pickle_eval_or_exec() -> None:
    files = project_files()
    assert len(files) > 50  # the scan really sees the project
    found = [v for path in files
             for v in violations(path.read_text(), str(path.relative_to(REPO)))]
    assert found == [], "\n".join(found)


@pytest.mark.mpi
def test_mpi_object_collectives_carry_msgpack_not_pickle() -> None:
    from launcher.mpirun import run_mpi

    out = run_mpi(2, "tests.unit.test_no_pickle", timeout=120).stdout
    got = json.loads(out.strip().splitlines()[-1])
    assert got == {"gather": [{"rank": 0, "host": "h"}, {"rank": 1, "host": "h"}],
                   "bcast": ["127.0.0.1", 5000], "allreduce_min": 10, "allreduce_sum": 21,
                   "allgather": ["r0", "r1"], "custom_class": "refused", "pickle_calls": 0}


def _rank_main() -> None:
    """Under mpirun: every lowercase collective the project uses, with pickle booby-trapped."""
    import pickle  # noqa: F401 - trapped below, to prove nothing calls it

    calls = {"n": 0}

    def trap(*_a: object, **_k: object) -> object:
        calls["n"] += 1
        raise AssertionError("pickle used between ranks")

    pickle.dumps = pickle.loads = trap  # type: ignore[assignment]
    from mpi4py import MPI

    from mpi_workers.dist import world

    comm = world()
    gathered = comm.gather({"rank": comm.rank, "host": "h"}, root=0)
    addr = comm.bcast(("127.0.0.1", 5000) if comm.rank == 0 else None, root=0)
    least = comm.allreduce(10 + comm.rank, op=MPI.MIN)
    total = comm.allreduce(10 + comm.rank, op=MPI.SUM)
    names = comm.allgather(f"r{comm.rank}")

    class Custom:
        pass

    try:
        MPI.pickle.dumps(Custom())
        custom = "sent"
    except TypeError:
        custom = "refused"
    if comm.rank == 0:
        print(json.dumps({"gather": gathered, "bcast": addr, "allreduce_min": least,
                          "allreduce_sum": total, "allgather": names, "custom_class": custom,
                          "pickle_calls": calls["n"]}), flush=True)


if __name__ == "__main__":
    _rank_main()
