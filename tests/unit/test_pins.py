"""Model version pins per micro-batch: a replay of a batch id gets the same version."""

from __future__ import annotations

from pathlib import Path

from etl.pins import VersionPins


def test_first_pin_wins_and_survives_a_restart(tmp_path: Path) -> None:
    pins = VersionPins(tmp_path)
    assert pins.pin(7, lambda: "v1") == "v1"
    assert pins.pin(7, lambda: "v2") == "v1"          # replay of batch 7
    assert VersionPins(tmp_path).pin(7, lambda: "v3") == "v1"  # after a driver restart
    assert pins.pin(8, lambda: "v2") == "v2"


def test_choose_is_not_called_for_a_pinned_batch(tmp_path: Path) -> None:
    pins = VersionPins(tmp_path)
    pins.pin(1, lambda: "v1")

    def boom() -> str:
        raise AssertionError("must not be asked again")

    assert pins.pin(1, boom) == "v1"


def test_uris_and_paths_are_told_apart() -> None:
    from etl.pins import is_uri

    for uri in ("file:///shared/ckpt", "hdfs://nn:8020/ckpt", "s3a://bucket/ckpt", "viewfs://x/y"):
        assert is_uri(uri), uri
    for path in ("/tmp/ckpt", "rel/ckpt", ".state/checkpoints/stream", "C:\\ckpt"):
        assert not is_uri(path), path


def test_a_uri_checkpoint_needs_the_spark_session() -> None:
    import pytest

    with pytest.raises(ValueError, match="Spark session"):
        VersionPins.beside("hdfs://nn/ckpt")
