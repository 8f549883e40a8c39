"""The fast model step (models/runtime.py, models/onnx_export.py, mpi_workers/model_cache.py):
ONNX Runtime's scores match eager torch's on real Fashion-MNIST frames, they are bit-identical
whatever batch a frame is in, the export is cached and checksummed beside the weights (a bad file
is regenerated), and an export that verifies but computes something else fails the parity gate:
the version serves eager torch and the rank's metrics say why."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from framestream.errors import ConfigError
from models.onnx_export import export_name
from models.registry import Registry
from models.runtime import TOLERANCE, compare
from mpi_workers.inference import forward
from mpi_workers.metrics import RankMetrics
from mpi_workers.model_cache import ModelCache
from tests.helpers.runtime_models import publish, real_frames, write_wrong_export
from tests.helpers.rebatch import assert_batch_invariant, bits

FRAMES = 2000


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    reg = Registry(tmp_path_factory.mktemp("registry"))
    publish(reg, seed=0)  # v0001
    return reg


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return real_frames(FRAMES)


def test_onnxruntime_scores_match_eager_on_real_frames(registry: Registry,
                                                       frames: np.ndarray) -> None:
    fast = ModelCache(str(registry.root), "cpu", default="v0001", runtime="onnxruntime")
    eager = ModelCache(str(registry.root), "cpu", default="v0001", runtime="eager")
    m = fast.get("v0001")
    assert m.runner is not None and m.runtime is not None
    assert m.runtime.runtime == "onnxruntime" and not m.runtime.fell_back
    assert m.runtime.parity is not None and m.runtime.parity.ok
    e, f = forward(eager.get("v0001"), frames), forward(m, frames)
    parity = compare(e, f)
    assert parity.max_abs_diff <= TOLERANCE, parity.describe()
    assert parity.class_changes == 0, parity.describe()
    changed = e.argmax(1) != f.argmax(1)
    assert changed.sum() == parity.near_tie_flips <= parity.near_ties
    # not vacuous: a trained-like net is confident, so the scores are not all near-uniform
    assert (e.max(axis=1) > 0.9).mean() > 0.5
    assert 0 < parity.max_abs_diff  # a different implementation, not eager torch again


@pytest.mark.parametrize("threads", [1, 2])
def test_onnxruntime_scores_do_not_depend_on_the_batch(registry: Registry, frames: np.ndarray,
                                                       threads: int) -> None:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)  # the session takes the rank's thread count at load
    try:
        model = ModelCache(str(registry.root), "cpu", default="v0001",
                           runtime="onnxruntime").get("v0001")
        assert model.runner is not None and model.runner.threads == threads
        assert_batch_invariant(lambda x, rng: forward(model, x), frames[:1500], seed=11)
    finally:
        torch.set_num_threads(previous)


def test_the_export_is_cached_checksummed_and_regenerated_when_bad(tmp_path: Path,
                                                                   frames: np.ndarray) -> None:
    reg = Registry(tmp_path / "registry")
    version = publish(reg, seed=1)
    path = reg.root / version / export_name(32)
    sidecar = path.with_name(path.name + ".json")
    first = ModelCache(str(reg.root), "cpu", default=version, runtime="onnxruntime").get(version)
    assert first.runtime is not None and first.runtime.runtime == "onnxruntime"
    meta = json.loads(sidecar.read_text())
    good = path.read_bytes()
    assert meta["sha256"] == hashlib.sha256(good).hexdigest()
    assert meta["weights_sha256"] == reg.manifest(version).sha256 and meta["rows"] == 32
    stamp = (path.stat().st_ino, path.stat().st_mtime_ns)

    again = ModelCache(str(reg.root), "cpu", default=version, runtime="onnxruntime").get(version)
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == stamp  # used, not exported again
    assert again.runtime is not None and again.runtime.runtime == "onnxruntime"

    rotten = bytearray(good)
    rotten[len(rotten) // 2] ^= 0xFF  # storage rot: the sidecar's checksum no longer matches
    path.write_bytes(bytes(rotten))
    fixed = ModelCache(str(reg.root), "cpu", default=version, runtime="onnxruntime").get(version)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == json.loads(sidecar.read_text())["sha256"]
    assert path.read_bytes() != bytes(rotten)
    assert fixed.runtime is not None and fixed.runtime.runtime == "onnxruntime"
    np.testing.assert_array_equal(forward(fixed, frames[:64]), forward(first, frames[:64]))


def test_an_export_that_fails_parity_falls_back_to_eager(tmp_path: Path, frames: np.ndarray,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    reg = Registry(tmp_path / "registry")
    version = publish(reg, seed=2)
    wrong = write_wrong_export(reg, version)  # verifies (right checksum), computes other scores
    metrics = RankMetrics(0)
    with caplog.at_level(logging.ERROR, logger="mpi_workers.model_cache"):
        cache = ModelCache(str(reg.root), "cpu", default=version, runtime="auto",
                           on_load=metrics.record_runtime)
    model = cache.get(version)
    assert model.runner is None and model.runtime is not None
    assert (model.runtime.runtime, model.runtime.fallback_reason) == ("eager", "parity")
    assert model.runtime.parity is not None and not model.runtime.parity.ok
    assert (reg.root / version / export_name(32)).read_bytes() == wrong  # checksum was fine
    eager = ModelCache(str(reg.root), "cpu", default=version, runtime="eager").get(version)
    np.testing.assert_array_equal(bits(forward(model, frames[:200])),
                                  bits(forward(eager, frames[:200])))
    assert any("serves eager torch instead of auto (parity" in r.getMessage()
               for r in caplog.records), caplog.text
    from prometheus_client import generate_latest

    text = generate_latest(metrics.registry).decode()
    info = re.search(r'framestream_rank_runtime_info\{([^}]*)\} 1\.0', text)
    assert info, text
    for label in (f'version="{version}"', 'runtime="eager"', 'requested="auto"',
                  'fallback_reason="parity"'):
        assert label in info.group(1), text
    assert 'framestream_rank_runtime_fallbacks_total{rank="0",reason="parity"} 1.0' in text


def test_compare_allows_only_near_tie_flips() -> None:
    eager = np.array([[0.90, 0.10], [0.50003, 0.49997], [0.6, 0.4]], np.float32)
    same = compare(eager, eager.copy())
    assert same.ok and same.near_ties == 1 and same.max_abs_diff == 0
    tie_flip = eager.copy()
    tie_flip[1] = [0.49997, 0.50003]  # within the tolerance: may swap
    got = compare(eager, tie_flip)
    assert got.ok and got.near_tie_flips == 1 and got.class_changes == 0
    real_flip = eager.copy()
    real_flip[2] = [0.4, 0.6]
    assert not compare(eager, real_flip).ok and compare(eager, real_flip).class_changes == 1
    drift = eager.copy()
    drift[0] += np.float32(3e-4)  # same classes, scores too far
    assert not compare(eager, drift).ok
    broken = eager.copy()
    broken[0, 0] = np.nan
    assert not compare(eager, broken).ok


def test_the_runtime_setting_and_flag() -> None:
    from mpi_workers.serve import ServeSettings, parse_args

    assert ServeSettings.load(env={}).runtime == "auto"
    assert ServeSettings.load(env={"FRAMESTREAM_SERVE_RUNTIME": "eager"}).runtime == "eager"
    with pytest.raises(ConfigError, match="FRAMESTREAM_SERVE_RUNTIME"):
        ServeSettings.load(env={"FRAMESTREAM_SERVE_RUNTIME": "tensorrt"})
    settings, _ = parse_args(["--runtime", "onnxruntime"])
    assert settings.runtime == "onnxruntime"
    with pytest.raises(ValueError, match="runtime"):
        ModelCache(None, "cpu", default="random-fashion_cnn", runtime="fast")
