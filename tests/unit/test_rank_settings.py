"""Only the settings a rank needs reach it (issue 16): mpirun's environment and the variables it
exports to other nodes hold the ranks' own settings, never Kafka's credentials, the executors'
CURVE secret or the driver's, Ray's, the cron's settings."""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

import pytest

from launcher.mpirun import GangLaunch, mpi_env, rank_may_see

#: what ranks run under mpirun (launcher.rank_exec wraps each of them in a gang)
RANK_ENTRY_POINTS = ("mpi_workers.serve", "jobs.retrain", "launcher.rank_exec")
#: names the rank code mentions but never reads in a rank, each with its reason
NOT_READ_BY_RANKS = {
    "FRAMESTREAM_CLIENT_": "framestream.security.client_keys: the executors' half of a module "
                           "ranks share",
}


def rank_modules() -> set[str]:
    import grimp

    graph = grimp.build_graph("framestream", "etl", "mpi_workers", "launcher", "models", "jobs")
    found: set[str] = set()
    for entry in RANK_ENTRY_POINTS:
        found |= graph.find_upstream_modules(entry) | {entry}
    return found


def named_settings(module: str) -> set[str]:
    """``FRAMESTREAM_*`` names in the module's code (docstrings aside), and each settings
    section's prefix (``section("serve")`` reads ``FRAMESTREAM_SERVE_*``)."""
    origin = importlib.util.find_spec(module).origin  # type: ignore[union-attr]
    tree = ast.parse(Path(origin).read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                       ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and id(node) not in docstrings:
            names |= set(re.findall(r"FRAMESTREAM_[A-Z0-9_]+", node.value))
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "section" \
                and node.args and isinstance(node.args[0], ast.Constant):
            names.add(f"FRAMESTREAM_{str(node.args[0].value).upper()}_")
    return names


def test_every_setting_the_rank_code_names_may_reach_the_ranks() -> None:
    modules = rank_modules()
    assert {"mpi_workers.serve", "mpi_workers.train", "models.registry"} <= modules
    assert not [m for m in modules if m.startswith("etl.")]  # ranks never import the ETL
    missing, named = {}, set()
    for module in sorted(modules):
        for name in named_settings(module):
            named.add(name)
            if name in NOT_READ_BY_RANKS:
                continue
            probe = name if not name.endswith("_") else name + "X"
            if not rank_may_see(probe):
                missing[name] = module
    assert set(NOT_READ_BY_RANKS) <= named, "a stale exception in NOT_READ_BY_RANKS"
    assert not missing, f"rank code reads settings the launcher keeps from ranks: {missing} " \
                        f"(add them to launcher.mpirun.RANK_SECTIONS / RANK_NAMES)"


#: values distinctive enough that finding one in mpirun's command line means it leaked (a bare
#: "3" is in any path like /tmp/ci3)
SECRETS = {
    "FRAMESTREAM_KAFKA_SASL_PASSWORD": "kafka-s3cret",
    "FRAMESTREAM_CLIENT_CURVE_SECRET": "/keys/executors.key_secret",
    "FRAMESTREAM_STREAM_CHECKPOINT": "hdfs://nn/ck",
    "FRAMESTREAM_SPARK_MASTER": "spark://m:7077",
    "FRAMESTREAM_RAY_ADDRESS": "head:6379",
    "FRAMESTREAM_CRON_SCHEDULE": "*/10 * * * *",
    "FRAMESTREAM_STATUS_PORT": "48765",
    "FRAMESTREAM_PRODUCER_RATE": "61.2573",
    "FRAMESTREAM_LAUNCHER_RETRIES": "40961",
}
RANKS_OWN = {
    "FRAMESTREAM_SERVE_MAX_BATCH": "64",
    "FRAMESTREAM_SERVE_CURVE_SECRET": "/keys/server.key_secret",
    "FRAMESTREAM_TRAIN_SEED": "7",
    "FRAMESTREAM_REGISTRY_ROOT": "/shared/registry",
    "FRAMESTREAM_STATE": "/var/fs",
    "FRAMESTREAM_LOG_LEVEL": "DEBUG",
}


def test_mpirun_gets_and_exports_only_the_ranks_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from launcher.layout import BundleInfo, NodeAddress, plan

    for k, v in {**SECRETS, **RANKS_OWN}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("HOME_OF_SOMETHING_ELSE", "kept")  # not ours: passes as before
    env = mpi_env()
    assert not set(SECRETS) & set(env), set(SECRETS) & set(env)
    assert {k: env[k] for k in RANKS_OWN} == RANKS_OWN
    assert env["HOME_OF_SOMETHING_ELSE"] == "kept"

    head = NodeAddress("10.1.0.1", "br0", "10.1.0.0/24")
    node = NodeAddress("10.1.0.2", "eth0", "10.1.0.0/24")
    layout = plan([BundleInfo(0, "a", head, "h", ()), BundleInfo(1, "b", node, "n", ())], head,
                  rsh_agent="/x/agent")
    launch = GangLaunch(layout, Path("/tmp/hf"))
    cmd = launch.command("mpi_workers.serve")
    exported = {cmd[i + 1] for i, c in enumerate(cmd) if c == "-x"}
    assert set(RANKS_OWN) <= exported
    assert not set(SECRETS) & exported
    assert not [v for v in SECRETS.values() if v in " ".join(cmd)]
    assert not set(SECRETS) & set(launch.env())
