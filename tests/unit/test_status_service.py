"""The status service's readers and policies, without Kafka or a browser (tests/status has
those)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from framestream.errors import ConfigError
from models.registry import Registry
from status import stream_tail
from status.__main__ import main
from status.files import RankWatch, _jsonl_tail, registry_view, runs_view
from status.settings import StatusSettings


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "*"])
def test_an_off_loopback_bind_needs_the_explicit_opt_in(host: str, capsys) -> None:
    with pytest.raises(ConfigError, match="FRAMESTREAM_STATUS_HOST.*--allow-remote"):
        StatusSettings(host=host).check_bind()
    StatusSettings(host=host, allow_remote=True).check_bind()
    assert main(["--host", host, "--port", "0"]) == 2
    assert "--allow-remote" in capsys.readouterr().err


def test_loopback_binds_need_nothing() -> None:
    for host in ("127.0.0.1", "localhost", "::1"):
        StatusSettings(host=host).check_bind()


def test_a_torn_or_foreign_line_in_a_log_is_skipped(tmp_path: Path) -> None:
    log = tmp_path / "runs.jsonl"
    log.write_text('{"status": "ok"}\nnot json\n[1, 2]\n{"status": "failed"}\n{"status": "o')
    assert _jsonl_tail(log) == [{"status": "ok"}, {"status": "failed"}]
    assert _jsonl_tail(tmp_path / "missing.jsonl") == []


def test_runs_carry_the_accuracy_per_epoch_of_the_version_they_made(tmp_path: Path) -> None:
    import torch

    from models.nets import DEFAULT_SPECS, build

    reg = Registry(tmp_path / "registry")
    torch.manual_seed(0)
    history = [{"epoch": i + 1, "holdout_accuracy": a} for i, a in enumerate((0.5, 0.7, 0.8))]
    v = reg.publish(build("fashion_cnn"), net="fashion_cnn", net_kwargs={},
                    spec=DEFAULT_SPECS["fashion_cnn"],
                    metrics={"holdout_accuracy": 0.8, "holdout": "t", "history": history},
                    parent=None, backend="none", world_size=1, data={}).version
    reg.promote(v)
    runs = tmp_path / "retrain" / "runs.jsonl"
    runs.parent.mkdir()
    runs.write_text(json.dumps({"status": "ok", "version": v, "promoted": True}) + "\n"
                    + json.dumps({"status": "failed", "version": None}) + "\n")
    got = runs_view(runs, reg.root)
    assert [r["status"] for r in got] == ["failed", "ok"]  # newest first
    assert got[1]["epochs"] == [0.5, 0.7, 0.8] and got[0]["epochs"] == []
    view = registry_view(reg.root)
    assert view["serving"] == v and view["error"] == ""
    assert view["decisions"][0]["version"] == v and view["decisions"][0]["promoted"]


def test_ranks_are_up_when_their_metrics_answer_and_down_when_not(tmp_path: Path) -> None:
    from mpi_workers.metrics import RankMetrics

    metrics = RankMetrics(0)
    metrics.frames.inc(42)
    metrics.model.info({"version": "v0007"})
    url = metrics.serve("127.0.0.1", 0)
    with socket.socket() as s:  # a port nobody listens on: the dead rank
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/metrics"
    path = tmp_path / "endpoints.json"
    path.write_text(json.dumps({"generation": 3, "ranks": [
        {"rank": 0, "host": "h", "pid": 1, "device": "cpu", "metrics": url},
        {"rank": 1, "host": "h", "pid": 2, "device": "cpu", "metrics": dead}]}))
    view = RankWatch(path, timeout=2).view(0.0)
    assert view["generation"] == 3
    up, down = view["ranks"]
    assert up["up"] and up["frames"] == 42 and up["model"] == "v0007"
    assert not down["up"] and down["error"]
    assert RankWatch(tmp_path / "none.json", 1).view(0.0)["error"] == "no endpoint file yet"


def test_the_status_role_imports_no_other_role() -> None:
    import ast

    from framestream.paths import REPO

    for path in (REPO / "status").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert name.split(".")[0] not in ("etl", "mpi_workers", "launcher", "jobs"), \
                    f"{path.name} imports {name}: status/ may use framestream/ and models/ only"
