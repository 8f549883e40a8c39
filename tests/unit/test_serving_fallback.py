"""A bad promotion never stops serving: real registries on disk, the real driver-side chooser and
the real rank-side model cache. What serving.json names is served when it loads; a checksum
failure, a manifest whose weights file leaves its folder, a missing version or a serving.json that
does not parse make both sides fall back to the same last good version."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from etl.client import ClientSettings
from etl.stream import ClassifyBatches, StreamSettings
from framestream.config import KafkaSettings
from models.errors import BadServingFile, BadVersion, RegistryError
from models.fallback import choose_serving
from models.registry import Registry
from mpi_workers.model_cache import ModelCache
from tests.helpers.registry import publish_random


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    """v0001 then v0002 promoted (history [v0001, v0002]); v0003 published, never promoted."""
    reg = Registry(tmp_path / "registry")
    for seed in (1, 2, 3):
        publish_random(reg, seed)
    assert reg.promote("v0001").promoted and reg.promote("v0002", force=True).promoted
    return reg


def rot(registry: Registry, version: str) -> None:
    weights = registry.root / version / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))


def name_in_serving(registry: Registry, version: str) -> None:
    path = registry.root / "serving.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "version": version}))


def point_weights(registry: Registry, version: str, weights_file: str) -> None:
    """Rewrite ``version``'s manifest so its weights_file names another version's weights, with
    that file's checksum: before confinement, this served v0001's weights as ``version``."""
    path = registry.root / version / "manifest.json"
    m = json.loads(path.read_text())
    m["weights_file"] = weights_file
    m["sha256"] = registry.manifest("v0001").sha256
    path.write_text(json.dumps(m))


def driver(tmp_path: Path, registry: Registry) -> ClassifyBatches:
    return ClassifyBatches(StreamSettings(checkpoint=str(tmp_path / "ck"),
                                          registry=str(registry.root),
                                          endpoints_file=str(tmp_path / "no-endpoints.json")),
                           KafkaSettings(), ClientSettings(), None, {}, {})


# -- weights confined to their version's folder ----------------------------------------------

@pytest.mark.parametrize("weights_file", ["../v0001/model.safetensors", "ABSOLUTE"])
def test_a_weights_file_outside_its_version_is_refused(registry: Registry,
                                                       weights_file: str) -> None:
    if weights_file == "ABSOLUTE":
        weights_file = str((registry.root / "v0001" / "model.safetensors").resolve())
    point_weights(registry, "v0003", weights_file)
    with pytest.raises(BadVersion, match="weights_file"):
        registry.verify("v0003")
    with pytest.raises(BadVersion, match="weights_file"):
        registry.load("v0003")


def test_a_symlink_out_of_the_version_is_refused(registry: Registry, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.safetensors"
    outside.write_bytes((registry.root / "v0001" / "model.safetensors").read_bytes())
    (registry.root / "v0003" / "link.safetensors").symlink_to(outside)
    point_weights(registry, "v0003", "link.safetensors")
    with pytest.raises(BadVersion, match="leads outside"):
        registry.verify("v0003")


# -- serving.json that does not parse -------------------------------------------------------

@pytest.mark.parametrize("text", ["{not json", "[]", '{"version": 7}',
                                  '{"version": "v0002", "history": "x"}'])
def test_a_broken_serving_file_is_a_clear_registry_error(registry: Registry, text: str) -> None:
    (registry.root / "serving.json").write_text(text)
    with pytest.raises(BadServingFile, match="serving.json"):
        registry.serving()
    # the served versions are rebuilt from decisions.jsonl
    assert registry.serving_history() == ["v0001", "v0002"]


# -- the shared choice --------------------------------------------------------------------------

def test_choice_falls_back_newest_served_first(registry: Registry) -> None:
    assert choose_serving(registry).version == "v0002"
    rot(registry, "v0002")
    got = choose_serving(registry)
    assert (got.version, got.named, got.reason, got.promoted) == (
        "v0001", "v0002", "checksum_mismatch", True)
    rot(registry, "v0001")  # nothing served before verifies: a published one, said so
    got = choose_serving(registry)
    assert (got.version, got.promoted) == ("v0003", False)
    rot(registry, "v0003")
    with pytest.raises(RegistryError, match="no version can be served"):
        choose_serving(registry)


def test_choice_names_each_reason(registry: Registry) -> None:
    name_in_serving(registry, "v0042")
    assert choose_serving(registry).reason == "version_not_found"
    point_weights(registry, "v0003", "../v0001/model.safetensors")
    name_in_serving(registry, "v0003")
    assert choose_serving(registry).reason == "bad_version"
    (registry.root / "serving.json").write_text("{not json")
    got = choose_serving(registry)
    assert (got.version, got.named, got.reason) == ("v0002", None, "unreadable_serving")


# -- the driver: a broken pointer never fails the batch -------------------------------------

@pytest.mark.parametrize("fault", ["checksum", "missing", "unparseable", "escaping"])
def test_a_fresh_driver_pins_the_last_good_version(registry: Registry, tmp_path: Path,
                                                   fault: str) -> None:
    """A driver that starts (or restarts) while serving.json points at something unservable
    and no ranks have published yet: before, it pinned "" (or failed the batch)."""
    expected = "v0001"
    if fault == "checksum":
        rot(registry, "v0002")
    elif fault == "missing":
        rot(registry, "v0002")
        name_in_serving(registry, "v0099")
    elif fault == "unparseable":
        rot(registry, "v0002")
        (registry.root / "serving.json").write_text('{"version": "v00')
    else:  # v0003's manifest reads v0001's weights: refused, the newest served good one is v0002
        point_weights(registry, "v0003", "../v0001/model.safetensors")
        name_in_serving(registry, "v0003")
        expected = "v0002"
    assert driver(tmp_path, registry).choose_version() == expected


def test_a_running_driver_survives_a_serving_file_that_stops_parsing(registry: Registry,
                                                                     tmp_path: Path) -> None:
    fn = driver(tmp_path, registry)
    assert fn.choose_version() == "v0002"
    (registry.root / "serving.json").write_text("{truncated")
    assert fn.choose_version() == "v0002"  # its last good version; the batch goes on
    registry.root.joinpath("serving.json").unlink()
    assert registry.promote("v0003").promoted  # repaired: the next batch follows it
    assert fn.choose_version() == "v0003"


# -- a starting rank ---------------------------------------------------------------------------

def test_a_starting_rank_loads_the_last_good_version(registry: Registry) -> None:
    rot(registry, "v0002")
    cache = ModelCache(str(registry.root), "cpu")
    assert cache.default_version == "v0001"
    assert cache.start is not None and cache.start.reason == "checksum_mismatch"
    assert cache.get(None).version == "v0001"
    with pytest.raises(RegistryError):  # asking for the bad one is a per-request error
        cache.get("v0002")
    with pytest.raises(RegistryError):  # a running rank logs this and keeps its default
        cache.refresh()
    assert cache.default_version == "v0001"


def test_a_starting_rank_never_loads_weights_from_outside_the_version(registry: Registry) -> None:
    point_weights(registry, "v0003", "../v0001/model.safetensors")
    name_in_serving(registry, "v0003")
    cache = ModelCache(str(registry.root), "cpu")
    assert cache.default_version == "v0002" and cache.start.reason == "bad_version"


def test_a_starting_rank_survives_an_unparseable_serving_file(registry: Registry) -> None:
    (registry.root / "serving.json").write_text("\x00\x01garbage")
    cache = ModelCache(str(registry.root), "cpu")
    assert cache.default_version == "v0002" and cache.start.reason == "unreadable_serving"


def test_a_version_named_explicitly_must_load(registry: Registry) -> None:
    rot(registry, "v0002")
    with pytest.raises(RegistryError, match="checksum"):
        ModelCache(str(registry.root), "cpu", default="v0002")
