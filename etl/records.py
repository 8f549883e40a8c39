"""Output rows of the stream, as Arrow arrays: prediction JSON and dead letters.

Both kinds leave the executors in one Arrow batch with the columns the Kafka sink writes
(``topic``, ``key``, ``value``, ``headers``) plus ``kind``. What each record holds, field by field
and header by header, is the contract in :mod:`framestream.records` (:class:`Prediction`,
:class:`DeadLetter`); this module builds them for whole batches and makes them fit the sink.

Every prediction field but ``prediction_ts`` (when this copy was made) and ``rank`` (which rank
answered it) is a function of the frame and the pinned model version, so a replayed offset yields
the same answer. The JSON is strict (RFC 8259): a number that is not finite (a capture time header
of "nan" or "inf", a NaN score) is written as ``null``, never as ``NaN``/``Infinity``; a label
header that is not an int64 is ``null``; ``key`` and ``frame_id`` are cut to 16 KiB.

A dead letter always fits the sink: when the frame (plus key and headers) would not fit
``max_record_bytes`` (the sink's ``max.request.size``), the bytes are cut to fit and
``fs-dlq-truncated`` says what was cut (``value``, ``headers``, ``key``); the copied headers are
capped at 16 KiB, the key at 16 KiB and the detail at 1,000 bytes. A frame within
FRAMESTREAM_LIMITS_MAX_BYTES is never cut (the sink's limit is that plus
:data:`framestream.topics.SINK_HEADROOM_BYTES`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from framestream.frames import finite_float, header_values, parse_int
from framestream.records import (DLQ_TRUNCATED, DeadLetter, Reason, prediction_dict,
                                 prediction_json)

HEADERS_TYPE = pa.list_(pa.struct([("key", pa.string()), ("value", pa.binary())]))
OUT_SCHEMA = pa.schema([("topic", pa.string()), ("key", pa.binary()), ("value", pa.binary()),
                        ("headers", HEADERS_TYPE), ("kind", pa.string())])
OUT_DDL = ("topic string, key binary, value binary, "
           "headers array<struct<key:string,value:binary>>, kind string")

PREDICTION, DEAD_LETTER = "prediction", "dead_letter"

#: Kafka's own default ``max.request.size``: what a dead letter fits when no limit is given.
KAFKA_DEFAULT_REQUEST_BYTES = 1_048_576
DETAIL_MAX_BYTES = 1000
KEY_MAX_BYTES = 16 * 1024            # a dead letter's key; a prediction's key and JSON texts
COPIED_HEADERS_MAX_BYTES = 16 * 1024  # the frame's own headers copied into its dead letter
# Upper bounds of Kafka's framing (DefaultRecordBatch / DefaultRecord, magic 2): the batch header,
# one record's length, attributes, timestamp and offset deltas and length varints, and the two
# length varints of each header.
_BATCH_OVERHEAD, _RECORD_OVERHEAD, _HEADER_OVERHEAD = 61, 36, 10


def _text(b: bytes | None) -> str | None:
    return None if b is None else b[:KEY_MAX_BYTES].decode("utf-8", errors="replace")


def _finite(x: float) -> float | None:
    """A float as strict JSON can carry it (None for NaN and infinities)."""
    return x if math.isfinite(x) else None


def record_bytes(key: bytes | None, value_len: int,
                 headers: Sequence[tuple[str | None, bytes | None]]) -> int:
    """An upper bound of the size Kafka's producer checks against ``max.request.size`` for one
    record (it counts a whole batch around it)."""
    return (_BATCH_OVERHEAD + _RECORD_OVERHEAD + len(key or b"") + value_len
            + sum(_HEADER_OVERHEAD + len((k or "").encode()) + len(v or b"") for k, v in headers))


def predictions(rows: np.ndarray, scores: np.ndarray, ranks: np.ndarray, version: str,
                batch_id: int, src: pa.RecordBatch, class_names: Sequence[str], topk: int, topic: str,
                frame_id_header: str, capture_header: str, label_header: str) -> pa.RecordBatch:
    """One prediction row per decoded frame; ``rows`` index into ``src``."""
    n = len(rows)
    k = max(1, min(topk, scores.shape[1] if scores.ndim == 2 else 1))
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k] if n else np.zeros((0, k), int)
    top_scores = np.take_along_axis(scores, order, axis=1) if n else np.zeros((0, k), np.float32)
    take = pa.array(rows, type=pa.int64())
    keys = [k if k is None else k[:KEY_MAX_BYTES] for k in src.column("key").take(take).to_pylist()]
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
    for i in range(n):  # no dataclass per frame on this path: the layout comes from the contract
        top = [{"index": int(c), "name": names[c] if c < len(names) else str(c),
                "score": _finite(float(s))} for c, s in zip(order[i], top_scores[i])]
        values.append(prediction_json(prediction_dict(
            topics[i], parts[i], offsets[i], _text(keys[i]), _text(frame_ids[i]),
            parse_int(labels[i]), top[0]["index"], top[0]["name"], top, version, batch_id,
            int(ranks[i]), _finite(ingest[i]), finite_float(captures[i]), now)))
    return pa.record_batch([pa.array([topic] * n, pa.string()), pa.array(keys, pa.binary()),
                            pa.array(values, pa.binary()), pa.array([[]] * n, HEADERS_TYPE),
                            pa.array([PREDICTION] * n, pa.string())], schema=OUT_SCHEMA)


def dead_letters(rows: np.ndarray, reasons: Sequence[str], details: Sequence[str],
                 src: pa.RecordBatch, topic: str,
                 max_record_bytes: int = KAFKA_DEFAULT_REQUEST_BYTES) -> pa.RecordBatch:
    """One dead-letter row per rejected frame: original key, bytes and headers, plus why; each
    row fits ``max_record_bytes`` (the sink's ``max.request.size``), cut to fit when it must."""
    n = len(rows)
    take = pa.array(rows, type=pa.int64())
    original = (src.column("headers").take(take).to_pylist() if "headers" in src.schema.names
                else [None] * n)
    keys = src.column("key").take(take).to_pylist()
    values = src.column("value").take(take).cast(pa.binary()).to_pylist()
    topics = src.column("topic").take(take).to_pylist()
    parts = src.column("partition").take(take).to_pylist()
    offsets = src.column("offset").take(take).to_pylist()
    out_keys, out_values, headers = [], [], []
    for i in range(n):
        cut: list[str] = []
        key, value = keys[i], values[i]
        if key is not None and len(key) > KEY_MAX_BYTES:
            key = key[:KEY_MAX_BYTES]
            cut.append("key")
        own: list[tuple[str | None, bytes | None]] = []
        room = COPIED_HEADERS_MAX_BYTES
        for h in original[i] or []:
            k, v = h["key"], h["value"]
            size = _HEADER_OVERHEAD + len((k or "").encode()) + len(v or b"")
            if size > room:  # keep the first ones in order, drop the rest
                cut.append("headers")
                break
            own.append((k, v))
            room -= size
        whole = value or b""
        detail = details[i].encode()[:DETAIL_MAX_BYTES].decode("utf-8", "ignore")
        letter = DeadLetter(Reason(reasons[i]), detail, str(topics[i]), parts[i], offsets[i],
                            len(whole), hashlib.sha256(whole).hexdigest())
        extra = letter.dlq_headers()
        marker = (DLQ_TRUNCATED, b"key,headers,value")  # room for the longest marker
        fits = max(0, max_record_bytes - record_bytes(key, 0, [*own, *extra, marker]))
        if value is not None and len(value) > fits:
            value = value[:fits]
            cut.append("value")
        if cut:
            extra = dataclasses.replace(letter, truncated=tuple(cut)).dlq_headers()
        out_keys.append(key)
        out_values.append(value)
        headers.append([{"key": k, "value": v} for k, v in [*own, *extra]])
    return pa.record_batch([pa.array([topic] * n, pa.string()), pa.array(out_keys, pa.binary()),
                            pa.array(out_values, pa.binary()), pa.array(headers, HEADERS_TYPE),
                            pa.array([DEAD_LETTER] * n, pa.string())], schema=OUT_SCHEMA)
