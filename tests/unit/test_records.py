"""etl.records on real Arrow batches shaped like Spark's Kafka source: every prediction is strict
JSON whatever the headers say, and every dead letter fits the sink's request size (checked with
kafka-python's own record-size bound), cut and marked when it must be."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from kafka.record.default_records import DefaultRecordBatchBuilder

from etl.records import HEADERS_TYPE, dead_letters, predictions
from framestream.frames import CAPTURE_TS_HEADER, FRAME_ID_HEADER, LABEL_HEADER
from framestream.records import DLQ_DETAIL, DLQ_REASON, DLQ_SHA256, DLQ_SIZE, DLQ_TRUNCATED


def strict_loads(raw: bytes) -> Any:
    def refuse(name: str) -> None:
        raise ValueError(f"not strict JSON: {name}")

    return json.loads(raw, parse_constant=refuse)


def kafka_rows(values: list[bytes | None], headers: list[list[tuple[str, bytes]]],
               keys: list[bytes] | None = None) -> pa.RecordBatch:
    n = len(values)
    return pa.record_batch({
        "key": pa.array(keys or [f"cam-{i}".encode() for i in range(n)], pa.binary()),
        "value": pa.array(values, pa.binary()),
        "topic": pa.array(["frames"] * n, pa.string()),
        "partition": pa.array([1] * n, pa.int32()),
        "offset": pa.array(range(100, 100 + n), pa.int64()),
        "timestamp": pa.array([1_700_000_000_000_000] * n, pa.timestamp("us")),
        "headers": pa.array([[{"key": k, "value": v} for k, v in h] for h in headers],
                            HEADERS_TYPE)})


def test_predictions_are_strict_json_whatever_the_headers_say() -> None:
    hostile_ts = [b"nan", b"inf", b"-inf", b"1e999", b"NaN", b"1767000000.5"]
    hostile_labels = [b"99999999999999999999", b"-3", b"abc", b"7", b"1e3", b"\xff"]
    src = kafka_rows([b"x"] * 6, [[(FRAME_ID_HEADER, f"f{i}".encode()),
                                   (CAPTURE_TS_HEADER, ts), (LABEL_HEADER, label)]
                                  for i, (ts, label) in enumerate(zip(hostile_ts, hostile_labels))])
    scores = np.full((6, 10), 0.1, np.float32)
    scores[5, 3] = np.nan  # a broken model must not make the sink write invalid JSON either
    out = predictions(np.arange(6), scores, np.zeros(6, np.int64), "v1", 3, src, [], 3,
                      "predictions", FRAME_ID_HEADER, CAPTURE_TS_HEADER, LABEL_HEADER)
    got = [strict_loads(v) for v in out.column("value").to_pylist()]
    assert [p["capture_ts"] for p in got] == [None] * 5 + [1767000000.5]
    assert [p["label"] for p in got] == [None, -3, None, 7, None, None]
    assert all(s["score"] is None or np.isfinite(s["score"]) for p in got for s in p["topk"])
    assert got[0]["ingest_ts"] == 1_700_000_000.0


def fits(batch: pa.RecordBatch, limit: int) -> list[int]:
    """kafka-python's upper bound of each row's size as a Kafka record, asserted <= limit."""
    sizes = []
    for row in batch.to_pylist():
        headers = [(h["key"], h["value"]) for h in row["headers"]]
        size = DefaultRecordBatchBuilder.estimate_size_in_bytes(row["key"], row["value"], headers)
        assert size <= limit, (size, limit)
        sizes.append(size)
    return sizes


@pytest.mark.parametrize("limit", [1_048_576, 2 * 1024 * 1024 + 64 * 1024])
def test_a_dead_letter_always_fits_the_sink_and_says_what_was_cut(limit: int) -> None:
    rng = np.random.default_rng(0)
    near = rng.integers(0, 256, 1_048_400, np.uint8).tobytes()       # the reproduction
    over = rng.integers(0, 256, 3 * 1024 * 1024, np.uint8).tobytes()  # > any limit here
    small = b"\xff\xd8 not a jpeg"
    fat_headers = [(f"x-{i}", b"h" * 4000) for i in range(10)]       # 40 KB of the frame's own
    src = kafka_rows([near, over, small, None, small],
                     [[(FRAME_ID_HEADER, b"a")], [], [(FRAME_ID_HEADER, b"c")], [], fat_headers],
                     keys=[b"cam-0", b"cam-1", b"k" * 100_000, b"cam-3", b"cam-4"])
    detail = "é" * 5000  # 10,000 UTF-8 bytes
    out = dead_letters(np.arange(5), ["undecodable", "too_large", "undecodable", "empty",
                                      "undecodable"], [detail] * 5, src, "frames.dlq", limit)
    fits(out, limit)
    rows = out.to_pylist()
    h = [dict((x["key"], x["value"]) for x in r["headers"]) for r in rows]
    for i, original in enumerate([near, over, small, b"", small]):
        assert h[i][DLQ_SIZE] == str(len(original)).encode()
        assert h[i][DLQ_SHA256] == hashlib.sha256(original).hexdigest().encode()
        assert (rows[i]["value"] or b"") == original[:len(rows[i]["value"] or b"")]  # a prefix
        assert len(h[i][DLQ_DETAIL]) <= 1000 and h[i][DLQ_DETAIL].decode()  # valid UTF-8
        assert h[i][DLQ_REASON]
    # the 1,048,400-byte frame is whole when the limit is above it, cut (and marked) when not
    assert (h[0].get(DLQ_TRUNCATED) == b"value") == (limit < 1_100_000)
    assert (rows[0]["value"] == near) == (limit > 1_100_000)
    assert h[0][FRAME_ID_HEADER] == b"a"
    assert h[1][DLQ_TRUNCATED] == b"value" and len(rows[1]["value"]) > limit - 2000
    assert h[2][DLQ_TRUNCATED] == b"key" and rows[2]["key"] == b"k" * 16384
    assert rows[3]["value"] is None and DLQ_TRUNCATED not in h[3]
    assert h[4][DLQ_TRUNCATED] == b"headers" and rows[4]["value"] == small
    assert [k for k in h[4] if k.startswith("x-")] == [f"x-{i}" for i in range(4)]
