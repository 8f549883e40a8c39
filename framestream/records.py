"""The stream's output records, as Kafka carries them: predictions and dead letters.

The contract between the sink (``etl/records.py`` builds them in Arrow batches) and everything
that reads them back (:mod:`framestream.results`, the demo, the status page, the benchmarks).

A :class:`Prediction` is a JSON value on ``predictions`` (strict RFC 8259, compact separators,
fields in the order below)::

    {"topic": "frames", "partition": 2, "offset": 1041, "key": "cam-3", "frame_id": "…",
     "label": 9, "class_index": 9, "class_name": "Ankle boot",
     "topk": [{"index": 9, "name": "Ankle boot", "score": 0.97}, …],
     "model_version": "v0002", "batch_id": 17, "rank": 1,
     "ingest_ts": 1700000000.123, "capture_ts": 1700000000.101, "prediction_ts": 1700000000.456}

A :class:`DeadLetter` is the frame's original key, bytes and headers on ``frames.dlq`` plus the
``fs-dlq-*`` headers below, in this order: reason, detail, source topic, partition, offset, the
frame's original size and sha256, and ``fs-dlq-truncated`` only when something was cut.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: FRAMESTREAM_LIMITS_MAX_BYTES's default: the largest encoded frame the ETL takes.
DEFAULT_MAX_FRAME_BYTES = 10 * 1024 * 1024


class Reason(str, enum.Enum):
    """Why a frame was rejected. The values go to the DLQ and into metrics: keep them stable."""

    EMPTY = "empty"                          # null or zero bytes
    TOO_LARGE = "too_large"                  # more encoded bytes than max_bytes
    UNDECODABLE = "undecodable"              # not an image Pillow can read, or broken inside
    TRUNCATED = "truncated"                  # a readable header, then the data stops early
    UNSUPPORTED_FORMAT = "unsupported_format"  # a real image, in a format not in `formats`
    TOO_MANY_PIXELS = "too_many_pixels"      # declared width*height over max_pixels
    BAD_DIMENSIONS = "bad_dimensions"        # a zero side, a side over max_side, absurd aspect
    UNSUPPORTED_MODE = "unsupported_mode"    # pixels with no agreed mapping to L/RGB (e.g. float)
    TIMEOUT = "timeout"                      # decoding took longer than decode_timeout_s

    def __str__(self) -> str:  # so f"{reason}" is the stable value, not "Reason.EMPTY"
        return self.value


# Dead-letter headers (added to the frame's own headers)
DLQ_REASON, DLQ_DETAIL = "fs-dlq-reason", "fs-dlq-detail"
DLQ_TOPIC, DLQ_PARTITION, DLQ_OFFSET = "fs-dlq-topic", "fs-dlq-partition", "fs-dlq-offset"
DLQ_SIZE, DLQ_SHA256 = "fs-dlq-value-size", "fs-dlq-value-sha256"   # of the frame as it came
DLQ_TRUNCATED = "fs-dlq-truncated"   # what was cut to fit the sink: "value", "headers", "key"
DLQ_HEADERS = (DLQ_REASON, DLQ_DETAIL, DLQ_TOPIC, DLQ_PARTITION, DLQ_OFFSET, DLQ_SIZE, DLQ_SHA256,
               DLQ_TRUNCATED)

#: Fields that describe one copy of a prediction, not the answer: when, and which rank.
COPY_FIELDS = ("prediction_ts", "rank")

Headers = Sequence[tuple[str, bytes | None]]


def prediction_dict(topic: str, partition: int, offset: int, key: str | None,
                    frame_id: str | None, label: int | None, class_index: int, class_name: str,
                    topk: list[dict[str, Any]], model_version: str, batch_id: int, rank: int,
                    ingest_ts: float | None, capture_ts: float | None,
                    prediction_ts: float) -> dict[str, Any]:
    """A prediction's JSON layout, in one place: :meth:`Prediction.to_dict` and the sink's
    per-row hot path (which builds no dataclass per frame) both use it."""
    return {"topic": topic, "partition": partition, "offset": offset, "key": key,
            "frame_id": frame_id, "label": label, "class_index": class_index,
            "class_name": class_name, "topk": topk, "model_version": model_version,
            "batch_id": batch_id, "rank": rank, "ingest_ts": ingest_ts, "capture_ts": capture_ts,
            "prediction_ts": prediction_ts}


def prediction_json(d: dict[str, Any]) -> bytes:
    """Strict JSON of :func:`prediction_dict`: a NaN or infinity left in it raises ValueError."""
    return json.dumps(d, separators=(",", ":"), allow_nan=False).encode()


@dataclass(frozen=True)
class TopK:
    index: int
    name: str
    score: float | None  # None: the score was not finite


@dataclass(frozen=True)
class Prediction:
    """One answer: the source offset it answers, the frame's identity, the classes, the copy."""

    topic: str
    partition: int
    offset: int
    key: str | None
    frame_id: str | None
    label: int | None
    class_index: int
    class_name: str
    topk: tuple[TopK, ...]
    model_version: str
    batch_id: int
    rank: int
    ingest_ts: float | None
    capture_ts: float | None
    prediction_ts: float

    @property
    def source(self) -> tuple[str, int, int]:
        return (self.topic, self.partition, self.offset)

    def to_dict(self) -> dict[str, Any]:
        return prediction_dict(
            self.topic, self.partition, self.offset, self.key, self.frame_id, self.label,
            self.class_index, self.class_name,
            [{"index": t.index, "name": t.name, "score": t.score} for t in self.topk],
            self.model_version, self.batch_id, self.rank, self.ingest_ts, self.capture_ts,
            self.prediction_ts)

    def to_json(self) -> bytes:
        """The Kafka value. A NaN or infinity left in a field is a bug: it raises ValueError."""
        return prediction_json(self.to_dict())

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Prediction":
        """Raises KeyError, TypeError or ValueError for a value that is not a prediction."""
        return cls(topic=d["topic"], partition=int(d["partition"]), offset=int(d["offset"]),
                   key=d["key"], frame_id=d["frame_id"], label=d["label"],
                   class_index=int(d["class_index"]), class_name=d["class_name"],
                   topk=tuple(TopK(int(t["index"]), t["name"], t["score"]) for t in d["topk"]),
                   model_version=str(d["model_version"]), batch_id=int(d["batch_id"]),
                   rank=int(d["rank"]), ingest_ts=d["ingest_ts"], capture_ts=d["capture_ts"],
                   prediction_ts=float(d["prediction_ts"]))

    @classmethod
    def from_json(cls, value: bytes | str) -> "Prediction":
        return cls.from_dict(json.loads(value))

    @classmethod
    def from_record(cls, record: Any) -> "Prediction":
        """From a consumed Kafka record (anything with ``.value``)."""
        return cls.from_json(record.value)

    def identity(self) -> dict[str, Any]:
        """What must be equal between two copies of one prediction: the answer, not the copy."""
        return {k: v for k, v in self.to_dict().items() if k not in COPY_FIELDS}


@dataclass(frozen=True)
class DeadLetter:
    """One rejected frame: why, where it came from, and what it was (size and sha256 of the
    bytes as they came; ``value`` may have been cut to fit the sink, see ``truncated``)."""

    reason: Reason
    detail: str
    topic: str
    partition: int
    offset: int
    size: int
    sha256: str
    truncated: tuple[str, ...] = ()      # "key", "headers", "value": what was cut
    key: bytes | None = None
    value: bytes | None = None
    headers: tuple[tuple[str, bytes | None], ...] = ()  # the frame's own headers, as copied

    @property
    def source(self) -> tuple[str, int, int]:
        return (self.topic, self.partition, self.offset)

    def dlq_headers(self) -> list[tuple[str, bytes]]:
        """The ``fs-dlq-*`` headers, in the order the sink writes them."""
        out = [(DLQ_REASON, str(self.reason).encode()), (DLQ_DETAIL, self.detail.encode()),
               (DLQ_TOPIC, str(self.topic).encode()), (DLQ_PARTITION, str(self.partition).encode()),
               (DLQ_OFFSET, str(self.offset).encode()), (DLQ_SIZE, str(self.size).encode()),
               (DLQ_SHA256, self.sha256.encode())]
        if self.truncated:
            out.append((DLQ_TRUNCATED, ",".join(self.truncated).encode()))
        return out

    def kafka_headers(self) -> list[tuple[str, bytes | None]]:
        """All headers of the record: the frame's own, then the ``fs-dlq-*`` ones."""
        return [*self.headers, *self.dlq_headers()]

    @classmethod
    def from_headers(cls, headers: Iterable[tuple[str, bytes | None]], key: bytes | None = None,
                     value: bytes | None = None) -> "DeadLetter":
        """Raises KeyError (a ``fs-dlq-*`` header missing) or ValueError (a bad number, an
        unknown reason) for a record that is not a dead letter."""
        own, dlq = [], {}
        for k, v in headers:
            if k in DLQ_HEADERS:
                dlq[k] = (v or b"").decode("utf-8", errors="replace")
            else:
                own.append((k, v))
        cut = dlq.get(DLQ_TRUNCATED, "")
        return cls(reason=Reason(dlq[DLQ_REASON]), detail=dlq.get(DLQ_DETAIL, ""),
                   topic=dlq[DLQ_TOPIC], partition=int(dlq[DLQ_PARTITION]),
                   offset=int(dlq[DLQ_OFFSET]), size=int(dlq.get(DLQ_SIZE) or 0),
                   sha256=dlq.get(DLQ_SHA256, ""), truncated=tuple(cut.split(",")) if cut else (),
                   key=key, value=value, headers=tuple(own))

    @classmethod
    def from_record(cls, record: Any) -> "DeadLetter":
        """From a consumed Kafka record (``.headers``, ``.key``, ``.value``)."""
        return cls.from_headers(record.headers or [], record.key, record.value)
