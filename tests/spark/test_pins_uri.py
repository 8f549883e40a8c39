"""Pins beside a URI checkpoint go through Hadoop's FileSystem API (issue 16: a driver restarted
on another host must find them where Spark finds its offsets, not in a local relative folder)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from etl.pins import PINS_DIR, VersionPins

pytestmark = [pytest.mark.spark]


def test_pins_under_a_file_uri_are_written_through_hadoop_and_survive_a_restart(
        spark, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shared = tmp_path / "shared"
    uri = shared.as_uri()  # file:///...
    monkeypatch.chdir(tmp_path)  # a relative "file:" folder would appear here
    pins = VersionPins.beside(uri, spark)
    assert pins.pin(7, lambda: "v1") == "v1"
    assert pins.pin(7, lambda: "v2") == "v1"
    restarted = VersionPins.beside(uri + "/", spark)  # a new driver, same checkpoint URI
    assert restarted.pin(7, lambda: "v3") == "v1"
    assert restarted.pin(8, lambda: "v2") == "v2"
    files = sorted(p.name for p in (shared / PINS_DIR).iterdir() if not p.name.startswith("."))
    assert [f for f in files if f.endswith(".json")] == ["000000000007.json", "000000000008.json"]
    assert not any(name.startswith("file") for name in os.listdir(tmp_path))


def test_a_second_writer_of_the_same_batch_keeps_the_first_pin(spark, tmp_path: Path) -> None:
    from etl.pins import HadoopStore

    store = HadoopStore((tmp_path / "ckpt").as_uri(), spark)
    store.write("000000000001.json", b'{"model_version": "v1"}')
    store.write("000000000001.json", b'{"model_version": "v9"}')  # rename onto it fails
    assert store.read("000000000001.json") == b'{"model_version": "v1"}'
    assert store.names() == ["000000000001.json"]  # the loser's temp file is gone too
