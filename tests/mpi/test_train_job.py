"""The retraining job end to end under real mpirun: checkpoint, resume, publish, promote."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from framestream import fashion_mnist
from launcher.errors import RankFailed
from launcher.mpirun import run_mpi
from models.registry import Registry
from models.train_loop import evaluate
from jobs.first_version import ensure_first_version

pytestmark = pytest.mark.mpi
HOLDOUT = 2000  # the first 2000 test images: a named holdout of its own, quick to evaluate


def _retrain(registry: Path, ckpt: Path, *extra: str, n: int = 2) -> dict:
    args = ["--max-train", "2000", "--epochs", "2", "--holdout-limit", str(HOLDOUT),
            "--registry", str(registry), "--checkpoint-dir", str(ckpt), "--no-progress", *extra]
    got = run_mpi(n, "jobs.retrain", args, timeout=120).result  # rank 0's result file
    assert got is not None
    return got


def test_stop_resume_publish_and_the_published_weights_are_the_evaluated_ones(tmp_path: Path) -> None:
    reg, ckpt = Registry(tmp_path / "reg"), tmp_path / "ckpt"
    first = _retrain(reg.root, ckpt, "--backend", "torch", "--stop-after", "1")
    assert first["version"] is None and first["epochs"] == 1 and "--resume" in first["reason"]
    assert (ckpt / "last.pt").is_file() and reg.versions() == []

    plot = tmp_path / "curves.png"
    done = _retrain(reg.root, ckpt, "--backend", "torch", "--resume", "--plot", str(plot))
    assert done["resumed_from_epoch"] == 1 and done["epochs"] == 2
    assert done["version"] == "v0001" and done["promoted"] and reg.serving() == "v0001"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    m = reg.manifest("v0001")
    assert (m.backend, m.world_size, m.net, m.parent) == ("torch", 2, "fashion_cnn", None)
    assert m.metrics["holdout"] == f"fashion-mnist/test[:{HOLDOUT}]"
    assert [h["epoch"] for h in m.metrics["history"]] == [1, 2]
    assert m.data["rows"] == [0, 2000] and m.data["source"] == "fashion-mnist"
    assert m.metrics["holdout_accuracy"] == done["holdout_accuracy"] > 0.5
    # Rank 0 published exactly the model the ranks evaluated together (BatchNorm statistics
    # averaged over ranks included): evaluating the stored weights gives the recorded accuracy.
    net, _ = reg.load("v0001")
    images, labels = fashion_mnist.load("test")
    correct, _, count = evaluate(net, images, labels, m.preprocess_spec(), np.arange(HOLDOUT))
    assert correct / count == pytest.approx(m.holdout_accuracy, abs=1e-9)

    # Resuming is exact: an uninterrupted run with the same settings produces the same bytes.
    straight = _retrain(tmp_path / "reg2", tmp_path / "ckpt2", "--backend", "torch")
    assert Registry(tmp_path / "reg2").manifest(straight["version"]).sha256 == m.sha256

    # A finished, published checkpoint is not published twice.
    again = _retrain(reg.root, ckpt, "--backend", "torch", "--resume")
    assert again["version"] == "v0001" and "already published" in again["reason"]
    assert len(reg.versions()) == 1


def test_resume_with_other_settings_fails_every_rank_instead_of_hanging(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    _retrain(tmp_path / "reg", ckpt, "--backend", "torch", "--stop-after", "1")
    with pytest.raises(RankFailed) as err:
        _retrain(tmp_path / "reg", ckpt, "--backend", "torch", "--resume", "--seed", "7")
    assert "--resume" in str(err.value) and "same settings" in str(err.value)


def test_ensure_first_version_trains_once_then_returns_the_serving_manifest(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "reg")
    extra = ["--max-train", "1000", "--holdout-limit", "1000",
             "--checkpoint-dir", str(tmp_path / "ckpt")]
    m = ensure_first_version(reg, ranks=2, epochs=1, timeout=120, extra_args=extra)
    assert m.version == "v0001" and reg.serving() == "v0001" and m.world_size == 2
    # --backend auto (the default): Horovod when it is installed, else torch.distributed.
    assert m.backend == ("horovod" if importlib.util.find_spec("horovod") else "torch")
    assert ensure_first_version(reg, ranks=2, epochs=1, timeout=1, extra_args=extra) == m
    assert len(reg.versions()) == 1

    # Continuous retraining: start from the serving weights; the gate still decides.
    # A tiny learning rate keeps it near where it started: v0001's accuracy, not chance (0.1).
    out = run_mpi(2, "jobs.retrain", ["--registry", str(reg.root), "--epochs", "1", "--warm-start",
                                      "--lr", "1e-6", "--no-promote", "--no-progress", *extra],
                  timeout=120)
    got = out.result
    assert got is not None and got["version"] == "v0002" and got["promoted"] is False and reg.serving() == "v0001"
    assert reg.manifest("v0002").parent == "v0001"
    assert got["holdout_accuracy"] == pytest.approx(m.holdout_accuracy, abs=0.05)
    assert m.holdout_accuracy > 0.3
