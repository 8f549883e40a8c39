"""Output rows of the stream, as Arrow arrays: prediction JSON and dead letters.

Both kinds leave the executors in one Arrow batch with the columns the Kafka sink writes
(``topic``, ``key``, ``value``, ``headers``) plus ``kind``. A prediction is a JSON value::

    {"topic": "frames", "partition": 2, "offset": 1041, "key": "cam-3", "frame_id": "…",
     "label": 9, "class_index": 9, "class_name": "Ankle boot",
     "topk": [{"index": 9, "name": "Ankle boot", "score": 0.97}, …],
     "model_version": "v0002", "batch_id": 17, "rank": 1,
     "ingest_ts": 1700000000.123, "capture_ts": 1700000000.101, "prediction_ts": 1700000000.456}

Every field but ``prediction_ts`` (when this copy was made) and ``rank`` (which rank answered it)
is a function of the frame and the pinned model version, so a replayed offset yields the same
answer. A dead letter keeps the frame's
original key, bytes and headers and adds ``fs-dlq-*`` headers: reason code, detail, source topic,
partition and offset.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from framestream.frames import header_values

HEADERS_TYPE = pa.list_(pa.struct([("key", pa.string()), ("value", pa.binary())]))
OUT_SCHEMA = pa.schema([("topic", pa.string()), ("key", pa.binary()), ("value", pa.binary()),
                        ("headers", HEADERS_TYPE), ("kind", pa.string())])
OUT_DDL = ("topic string, key binary, value binary, "
           "headers array<struct<key:string,value:binary>>, kind string")

PREDICTION, DEAD_LETTER = "prediction", "dead_letter"
DLQ_REASON, DLQ_DETAIL = "fs-dlq-reason", "fs-dlq-detail"
DLQ_TOPIC, DLQ_PARTITION, DLQ_OFFSET = "fs-dlq-topic", "fs-dlq-partition", "fs-dlq-offset"


def _text(b: bytes | None) -> str | None:
    return None if b is None else b.decode("utf-8", errors="replace")


def _number(b: bytes | None, kind: type) -> float | int | None:
    try:
        return None if b is None else kind(b.decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        return None


def predictions(rows: np.ndarray, scores: np.ndarray, ranks: np.ndarray, version: str,
                batch_id: int, src: pa.RecordBatch, class_names: Sequence[str], topk: int, topic: str,
                frame_id_header: str, capture_header: str, label_header: str) -> pa.RecordBatch:
    """One prediction row per decoded frame; ``rows`` index into ``src``."""
    n = len(rows)
    k = max(1, min(topk, scores.shape[1] if scores.ndim == 2 else 1))
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k] if n else np.zeros((0, k), int)
    top_scores = np.take_along_axis(scores, order, axis=1) if n else np.zeros((0, k), np.float32)
    take = pa.array(rows, type=pa.int64())
    keys = src.column("key").take(take).to_pylist()
    topics = src.column("topic").take(take).to_pylist()
    parts = src.column("partition").take(take).to_pylist()
    offsets = src.column("offset").take(take).to_pylist()
    ingest = (src.column("timestamp").take(take).cast(pa.int64()).to_numpy(zero_copy_only=False)
              / 1e6).tolist()
    if "headers" in src.schema.names:
        headers = src.column("headers").take(take)
        frame_ids, captures, labels = (header_values(headers, h).to_pylist()
                                       for h in (frame_id_header, capture_header, label_header))
    else:
        frame_ids = captures = labels = [None] * n
    names = list(class_names) or [str(i) for i in range(scores.shape[1] if n else 0)]
    now = time.time()
    values = []
    for i in range(n):
        top = [{"index": int(c), "name": names[c] if c < len(names) else str(c),
                "score": float(s)} for c, s in zip(order[i], top_scores[i])]
        values.append(json.dumps({
            "topic": topics[i], "partition": parts[i], "offset": offsets[i], "key": _text(keys[i]),
            "frame_id": _text(frame_ids[i]), "label": _number(labels[i], int),
            "class_index": top[0]["index"], "class_name": top[0]["name"], "topk": top,
            "model_version": version, "batch_id": batch_id, "rank": int(ranks[i]),
            "ingest_ts": ingest[i],
            "capture_ts": _number(captures[i], float), "prediction_ts": now,
        }, separators=(",", ":")).encode())
    return pa.record_batch([pa.array([topic] * n, pa.string()), pa.array(keys, pa.binary()),
                            pa.array(values, pa.binary()), pa.array([[]] * n, HEADERS_TYPE),
                            pa.array([PREDICTION] * n, pa.string())], schema=OUT_SCHEMA)


def dead_letters(rows: np.ndarray, reasons: Sequence[str], details: Sequence[str],
                 src: pa.RecordBatch, topic: str) -> pa.RecordBatch:
    """One dead-letter row per rejected frame: original key, bytes and headers, plus why."""
    n = len(rows)
    take = pa.array(rows, type=pa.int64())
    original = (src.column("headers").take(take).to_pylist() if "headers" in src.schema.names
                else [None] * n)
    topics = src.column("topic").take(take).to_pylist()
    parts = src.column("partition").take(take).to_pylist()
    offsets = src.column("offset").take(take).to_pylist()
    headers = []
    for i in range(n):
        extra = [(DLQ_REASON, reasons[i]), (DLQ_DETAIL, details[i][:1000]),
                 (DLQ_TOPIC, topics[i]), (DLQ_PARTITION, str(parts[i])),
                 (DLQ_OFFSET, str(offsets[i]))]
        headers.append(list(original[i] or []) + [{"key": k, "value": v.encode()} for k, v in extra])
    return pa.record_batch([pa.array([topic] * n, pa.string()), src.column("key").take(take),
                            src.column("value").take(take).cast(pa.binary()),
                            pa.array(headers, HEADERS_TYPE),
                            pa.array([DEAD_LETTER] * n, pa.string())], schema=OUT_SCHEMA)
