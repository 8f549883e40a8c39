"""The model registry: versions, checksums, the promotion gate, rollback and the CLI."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from framestream.errors import ConfigError
from models.errors import ChecksumMismatch, NothingToRollBack, RegistryError, VersionNotFound
from models.nets import DEFAULT_SPECS, build
from models.registry import Manifest, Registry, RegistrySettings, sha256_file
from models.registry_cli import run as cli

SPEC = DEFAULT_SPECS["fashion_cnn"]
KW = {"width": 4}


def _net(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build("fashion_cnn", **KW)


def _publish(reg: Registry, acc: float, seed: int = 0, parent: str | None = None,
             holdout: str = "fashion-mnist/test") -> Manifest:
    return reg.publish(_net(seed), net="fashion_cnn", net_kwargs=KW, spec=SPEC,
                       metrics={"holdout_accuracy": acc, "holdout": holdout}, parent=parent,
                       backend="torch", world_size=2, data={"source": "unit-test", "n": 10})


@pytest.fixture
def reg(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "registry")


def test_publish_numbers_versions_and_writes_a_complete_manifest(reg: Registry) -> None:
    m1 = _publish(reg, 0.80)
    m2 = _publish(reg, 0.85, seed=1, parent="v0001")
    assert (m1.version, m2.version) == ("v0001", "v0002")
    assert [m.version for m in reg.versions()] == ["v0001", "v0002"]
    on_disk = json.loads((reg.root / "v0002" / "manifest.json").read_text())
    assert on_disk == m2.to_dict() and reg.manifest("v0002") == m2
    assert m2.parent == "v0001" and m2.world_size == 2 and m2.backend == "torch"
    assert m2.sha256 == sha256_file(reg.root / "v0002" / m2.weights_file)
    assert m1.sha256 != m2.sha256
    assert m2.preprocess_spec() == SPEC
    assert m2.created.endswith("+00:00")
    assert reg.serving() is None  # publishing never promotes
    assert not [p for p in reg.root.iterdir() if p.name.startswith(".tmp")]


def test_publish_validates_metrics_and_parent(reg: Registry) -> None:
    with pytest.raises(ValueError, match="holdout"):
        reg.publish(_net(0), net="fashion_cnn", net_kwargs=KW, spec=SPEC,
                    metrics={"holdout_accuracy": 0.9}, parent=None, backend="torch",
                    world_size=1, data={})
    with pytest.raises(VersionNotFound, match="v0042"):
        _publish(reg, 0.9, parent="v0042")
    assert reg.versions() == []


def test_concurrent_publishers_get_distinct_versions(reg: Registry) -> None:
    with ThreadPoolExecutor(4) as pool:
        got = sorted(pool.map(lambda i: _publish(reg, 0.5 + i / 100, seed=i).version, range(6)))
    assert got == [f"v{i:04d}" for i in range(1, 7)]


def test_load_returns_the_published_weights_in_eval_mode(reg: Registry) -> None:
    net = _net(3).eval()
    _publish(reg, 0.9, seed=3)
    reg.promote("v0001")
    loaded, m = reg.load()  # None = the serving version
    assert m.version == "v0001" and not loaded.training
    x = torch.randn(5, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x), rtol=0, atol=0)
    assert reg.load("v0001")[1] == m


def test_load_and_promote_refuse_a_corrupted_weights_file(reg: Registry) -> None:
    m = _publish(reg, 0.9)
    path = reg.root / "v0001" / m.weights_file
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatch) as err:
        reg.load("v0001")
    msg = str(err.value)
    assert str(path) in msg and m.sha256 in msg and err.value.actual in msg
    with pytest.raises(ChecksumMismatch):
        reg.promote("v0001", force=True)
    assert reg.serving() is None


def test_load_without_serving_or_unknown_version(reg: Registry) -> None:
    with pytest.raises(RegistryError, match="no serving version"):
        reg.load()
    with pytest.raises(VersionNotFound, match="v0009"):
        reg.load("v0009")
    with pytest.raises(VersionNotFound):
        reg.manifest("../etc")


def test_promotion_gate(reg: Registry) -> None:
    for acc in (0.80, 0.85, 0.84, 0.86, 0.87, 0.99):
        _publish(reg, acc, holdout="fashion-mnist/test")
    _publish(reg, 0.999, holdout="other-set")
    first = reg.promote("v0001")
    assert first.promoted and "first" in first.reason and reg.serving() == "v0001"
    assert reg.promote("v0002").promoted and reg.serving() == "v0002"
    worse = reg.promote("v0003")
    assert not worse.promoted and "0.8400 < v0002's 0.8500" in worse.reason
    assert reg.serving() == "v0002"
    assert not reg.promote("v0004", margin=0.02).promoted        # 0.86 < 0.85 + 0.02
    assert reg.promote("v0005", margin=0.02).promoted            # 0.87 >= 0.85 + 0.02
    assert not reg.promote("v0005").promoted                     # already serving
    other = reg.promote("v0007")
    assert not other.promoted and "holdout sets differ" in other.reason
    assert reg.promote("v0003", force=True).promoted and reg.serving() == "v0003"
    decisions = [json.loads(line) for line in (reg.root / "decisions.jsonl").read_text().splitlines()]
    assert [d["promoted"] for d in decisions] == [True, True, False, False, True, False, False, True]
    assert all(d["reason"] for d in decisions)


def test_rollback_walks_back_through_the_served_history(reg: Registry) -> None:
    for acc in (0.8, 0.9, 0.95):
        _publish(reg, acc)
    with pytest.raises(NothingToRollBack):
        reg.rollback()
    for v in ("v0001", "v0002", "v0003"):
        assert reg.promote(v).promoted
    assert reg.rollback() == "v0002" and reg.serving() == "v0002"
    assert reg.rollback() == "v0001" and reg.serving() == "v0001"
    with pytest.raises(NothingToRollBack, match="no earlier served version"):
        reg.rollback()
    # The gate compares against what is served now, not the best ever published.
    assert reg.promote("v0002").promoted


def test_serving_sees_changes_made_by_another_process(reg: Registry) -> None:
    other = Registry(reg.root)
    _publish(reg, 0.8)
    _publish(reg, 0.9)
    assert reg.serving() is None
    other.promote("v0001")
    assert reg.serving() == "v0001"
    other.promote("v0002")
    assert reg.serving() == "v0002"
    state = json.loads((reg.root / "serving.json").read_text())
    assert [h["version"] for h in state["history"]] == ["v0001", "v0002"]


def test_manifest_ignores_fields_added_by_newer_writers(reg: Registry) -> None:
    m = _publish(reg, 0.8)
    assert Manifest.from_dict({**m.to_dict(), "future_field": 1}) == m


def test_settings_from_environment(tmp_path: Path) -> None:
    env = {"FRAMESTREAM_REGISTRY_ROOT": str(tmp_path / "r"), "FRAMESTREAM_REGISTRY_MARGIN": "0.01"}
    s = RegistrySettings.load(env=env)
    assert s.root == tmp_path / "r" and s.margin == 0.01
    with pytest.raises(ConfigError, match="FRAMESTREAM_REGISTRY_MARGIN"):
        RegistrySettings.load(env={"FRAMESTREAM_REGISTRY_MARGIN": "5"})


def test_cli(reg: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    root = str(reg.root)
    assert cli(["--root", root, "list"]) == 0 and "empty" in capsys.readouterr().out
    _publish(reg, 0.8)
    _publish(reg, 0.7)
    assert cli(["--root", root, "promote", "v0001"]) == 0
    assert json.loads(capsys.readouterr().out)["serving"] == "v0001"
    assert cli(["--root", root, "promote", "v0002"]) == 1
    assert json.loads(capsys.readouterr().out)["promoted"] is False
    assert cli(["--root", root, "promote", "v0002", "--force"]) == 0
    capsys.readouterr()
    assert cli(["--root", root, "list"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[2].startswith("*") and "v0002" in rows[2] and "0.7000" in rows[2]
    assert cli(["--root", root, "show", "v0001"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["version"] == "v0001" and shown["serving"] is False
    assert cli(["--root", root, "rollback"]) == 0
    assert json.loads(capsys.readouterr().out) == {"serving": "v0001"}
    assert cli(["--root", root, "show", "v0077"]) == 2
    assert "v0077" in capsys.readouterr().err


def test_identical_weights_give_identical_files_and_checksums(tmp_path: Path) -> None:
    a, b = Registry(tmp_path / "a"), Registry(tmp_path / "b")
    assert _publish(a, 0.8, seed=5).sha256 == _publish(b, 0.8, seed=5).sha256
    assert _publish(a, 0.8, seed=5).sha256 == a.manifest("v0001").sha256  # v0002, same bytes
