"""Files other processes read are readable by other users; what only we read stays private
(issue 16: executors and ranks may run as other users and must read endpoints, serving, manifests)."""

from __future__ import annotations

import stat
from pathlib import Path

import torch

from framestream import endpoints, run_files
from framestream.atomic import PRIVATE, write_atomic
from models.nets import DEFAULT_SPECS, build
from models.registry import Registry
from models.train_loop import write_bytes_atomic


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_shared_files_are_0644_and_private_ones_0600(tmp_path: Path, monkeypatch) -> None:
    write_atomic(tmp_path / "shared.json", "{}")
    write_atomic(tmp_path / "private.json", "{}", mode=PRIVATE)
    assert _mode(tmp_path / "shared.json") == 0o644
    assert _mode(tmp_path / "private.json") == 0o600

    ep = endpoints.EndpointSet(generation=1, ranks=(), model_version="v0001")
    endpoints.publish(tmp_path / "endpoints.json", ep)
    assert _mode(tmp_path / "endpoints.json") == 0o644

    torch.manual_seed(0)
    reg = Registry(tmp_path / "registry")
    m = reg.publish(build("fashion_cnn"), net="fashion_cnn", net_kwargs={},
                    spec=DEFAULT_SPECS["fashion_cnn"],
                    metrics={"holdout_accuracy": 0.5, "holdout": "fashion-mnist/test"},
                    parent=None, backend="torch", world_size=1, data={"source": "unit-test"})
    reg.promote(m.version)
    assert _mode(reg.root / "serving.json") == 0o644
    assert _mode(reg.root / m.version / "manifest.json") == 0o644

    write_bytes_atomic(tmp_path / "last.pt", b"checkpoint")
    assert _mode(tmp_path / "last.pt") == 0o600
    monkeypatch.setenv(run_files.RUN_DIR_ENV, str(tmp_path / "run"))
    (tmp_path / "run").mkdir()
    result = run_files.write_result({"ok": True})
    assert result is not None and _mode(result) == 0o600
