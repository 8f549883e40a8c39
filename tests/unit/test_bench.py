"""The benchmarks' pure helpers: statistics, burst summaries, stage classification, the README."""

from __future__ import annotations

import json
from collections import namedtuple

import pytest

from bench.breakdown import classify
from bench.common import median, percentile, ratio
from bench.kafka_io import summarize
from bench.report import replace_section

Record = namedtuple("Record", "value timestamp")


def _pred(offset: int, capture: float, predicted: float, label: int = 1, cls: int = 1) -> Record:
    value = json.dumps({"topic": "t", "partition": 0, "offset": offset, "label": label,
                        "class_index": cls, "capture_ts": capture, "prediction_ts": predicted})
    return Record(value.encode(), int(predicted * 1000))


def test_percentile_interpolates_and_median_skips_none() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == pytest.approx(2.5)
    assert percentile([5.0], 99) == 5.0
    assert percentile([], 50) is None
    assert median([3.0, None, 1.0, 2.0]) == 2.0
    assert median([None]) is None
    assert ratio(3.0, 2.0) == 1.5 and ratio(None, 2.0) is None and ratio(1.0, 0) is None


def test_summarize_counts_each_offset_once_and_measures_from_first_capture() -> None:
    records = [_pred(0, 100.0, 101.0), _pred(1, 100.5, 102.0, cls=2), _pred(1, 100.5, 102.5, cls=2)]
    s = summarize(records, count=3)
    assert s["predictions"] == 2 and s["duplicates"] == 1 and s["missing"] == 1
    assert s["seconds"] == pytest.approx(2.0)          # last Kafka timestamp - first capture
    assert s["frames_per_s"] == pytest.approx(1.0)
    assert s["accuracy"] == 0.5
    assert s["latency_max_s"] == pytest.approx(1.5)


def test_summarize_of_a_backlog_counts_from_the_resume() -> None:
    records = [_pred(i, 90.0, 100.0 + i) for i in range(4)]
    s = summarize(records, count=4, started=99.0)
    assert s["seconds"] == pytest.approx(4.0) and s["frames_per_s"] == pytest.approx(1.0)


@pytest.mark.parametrize(("role", "stack", "stage"), [
    ("executor", "process 1:\"python\";main (worker.py:10);classify_batch (etl/classify.py:70);"
                 "decode_batch (etl/decode.py:200);decode_one (etl/decode.py:150);"
                 "_read (etl/decode.py:240);Image.resize (PIL/Image.py:2300)", "preprocess"),
    ("executor", "classify_batch (etl/classify.py:70);decode_one (etl/decode.py:150);"
                 "ImageFile.load (PIL/ImageFile.py:300)", "decode"),
    ("executor", "classify_batch (etl/classify.py:70);RankClient.submit (etl/client.py:120);"
                 "encode (mpi_workers/protocol.py:98)", "send"),
    ("executor", "classify_batch (etl/classify.py:80);predictions (etl/records.py:90)",
     "sink rows"),
    ("rank", "RankServer.run (mpi_workers/server_loop.py:78);RankServer._infer "
             "(mpi_workers/server_loop.py:151);forward (mpi_workers/server_loop.py:163);"
             "Conv2d.forward (torch/nn/modules/conv.py:500)", "forward"),
    ("rank", "RankServer._infer (mpi_workers/server_loop.py:151);forward "
             "(mpi_workers/server_loop.py:163);normalize (models/spec.py:70)", "preprocess"),
    ("rank", "RankServer._infer (mpi_workers/server_loop.py:151);RankServer._reply "
             "(mpi_workers/server_loop.py:97);encode (mpi_workers/protocol.py:98)", "reply"),
    ("rank", "somewhere_else (x.py:1)", "other Python"),
])
def test_classify_takes_the_innermost_known_frame(role: str, stack: str, stage: str) -> None:
    assert classify(role, stack) == stage


def test_replace_section_replaces_only_the_performance_section() -> None:
    readme = "# t\n\n## A\na\n\n## Performance\nold\n\n## B\nb\n"
    out = replace_section(readme, "## Performance\nnew\n")
    assert out == "# t\n\n## A\na\n\n## Performance\nnew\n\n## B\nb\n"
    assert replace_section("# t\n", "## Performance\nx\n") == "# t\n\n## Performance\nx\n"
    last = replace_section("# t\n## Performance\nold\n", "## Performance\nnew\n")
    assert last == "# t\n## Performance\nnew\n\n"


@pytest.mark.parametrize("argv", [[], ["--quick"], ["--batches", "1,5", "--frames", "100"]])
def test_both_profiles_parse_into_every_parameter_the_phases_read(argv: list[str]) -> None:
    from bench.stream import parse

    _, params = parse(argv)
    assert params["burst_s"] > 0 and params["latency_s"] > 0 and params["repeats"] >= 1
    assert set(params["frames"]) == set(params["warmup_frames"]) == {"fashion", "imagenet"}
    assert all(params["grid"][s]["ranks"] and params["grid"][s]["batches"] for s in params["sets"])
