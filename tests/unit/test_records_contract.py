"""The output records' contract (framestream.records) against what the sink (etl.records)
writes: field order and header order are the wire format readers depend on, and decoding then
encoding again gives back the very bytes the sink wrote."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from etl.records import dead_letters, predictions
from framestream.frames import CAPTURE_TS_HEADER, FRAME_ID_HEADER, LABEL_HEADER
from framestream.records import DeadLetter, Prediction, Reason
from tests.unit.test_records import kafka_rows

FIELDS = ["topic", "partition", "offset", "key", "frame_id", "label", "class_index", "class_name",
          "topk", "model_version", "batch_id", "rank", "ingest_ts", "capture_ts", "prediction_ts"]
DLQ_ORDER = ["fs-dlq-reason", "fs-dlq-detail", "fs-dlq-topic", "fs-dlq-partition",
             "fs-dlq-offset", "fs-dlq-value-size", "fs-dlq-value-sha256"]


def test_a_prediction_the_sink_wrote_decodes_and_encodes_to_the_same_bytes() -> None:
    src = kafka_rows([b"x", b"y"], [[(FRAME_ID_HEADER, b"f0"), (CAPTURE_TS_HEADER, b"1767000000.5"),
                                     (LABEL_HEADER, b"3")], [(CAPTURE_TS_HEADER, b"nan")]])
    scores = np.array([[0.1, 0.7, 0.2], [0.5, 0.25, 0.25]], np.float32)
    out = predictions(np.arange(2), scores, np.array([1, 0]), "v0002", 17, src, ["a", "b", "c"],
                      2, "predictions", FRAME_ID_HEADER, CAPTURE_TS_HEADER, LABEL_HEADER)
    raw = out.column("value").to_pylist()
    first = Prediction.from_json(raw[0])
    assert list(first.to_dict()) == FIELDS
    assert raw[0].startswith(b'{"topic":"frames","partition":1,"offset":100,"key":"cam-0",'
                             b'"frame_id":"f0","label":3,"class_index":1,"class_name":"b",'
                             b'"topk":[{"index":1,"name":"b","score":0.699999988079071},'
                             b'{"index":2,"name":"c","score":0.20000000298023224}],'
                             b'"model_version":"v0002","batch_id":17,"rank":1,')
    assert first.source == ("frames", 1, 100) and first.capture_ts == 1767000000.5
    assert [Prediction.from_json(v).to_json() for v in raw] == raw
    second = Prediction.from_json(raw[1])
    assert second.label is None and second.capture_ts is None and second.frame_id is None
    assert set(second.identity()) == set(FIELDS) - {"rank", "prediction_ts"}


def test_a_prediction_that_is_not_finite_is_refused() -> None:
    p = Prediction.from_json(b'{"topic":"t","partition":0,"offset":1,"key":null,"frame_id":null,'
                             b'"label":null,"class_index":0,"class_name":"a","topk":[],'
                             b'"model_version":"v","batch_id":0,"rank":0,"ingest_ts":null,'
                             b'"capture_ts":null,"prediction_ts":1.0}')
    with pytest.raises(ValueError):
        Prediction(**{**p.__dict__, "ingest_ts": float("nan")}).to_json()


def test_a_dead_letter_the_sink_wrote_decodes_and_encodes_to_the_same_headers() -> None:
    frame = b"\x89PNG broken"
    src = kafka_rows([frame, b"z" * 2_000_000], [[(FRAME_ID_HEADER, b"f0")], []])
    out = dead_letters(np.arange(2), ["undecodable", Reason.TOO_LARGE], ["bad png", "big"],
                       src, "frames.dlq", max_record_bytes=1_000_000)
    rows = out.to_pylist()
    for row in rows:
        headers = [(h["key"], h["value"]) for h in row["headers"]]
        letter = DeadLetter.from_headers(headers, row["key"], row["value"])
        assert letter.kafka_headers() == headers
    first = DeadLetter.from_headers([(h["key"], h["value"]) for h in rows[0]["headers"]])
    assert [k for k, _ in first.dlq_headers()] == DLQ_ORDER
    assert first.reason is Reason.UNDECODABLE and first.source == ("frames", 1, 100)
    assert first.headers == ((FRAME_ID_HEADER, b"f0"),)
    assert first.size == len(frame) and first.sha256 == hashlib.sha256(frame).hexdigest()
    cut = DeadLetter.from_headers([(h["key"], h["value"]) for h in rows[1]["headers"]])
    assert cut.reason is Reason.TOO_LARGE and cut.truncated == ("value",)
    assert [k for k, _ in cut.dlq_headers()] == [*DLQ_ORDER, "fs-dlq-truncated"]


def test_a_record_that_is_not_a_dead_letter_is_refused() -> None:
    with pytest.raises(KeyError):
        DeadLetter.from_headers([("fs-dlq-reason", b"empty")])
    with pytest.raises(ValueError):
        DeadLetter.from_headers([("fs-dlq-reason", b"no-such-reason"), ("fs-dlq-topic", b"t"),
                                 ("fs-dlq-partition", b"0"), ("fs-dlq-offset", b"1")])
