"""Read what the stream wrote (``predictions`` and ``frames.dlq``) and sum it up.

Used by the demo, the end-to-end tests and the benchmarks: counts per source offset (so a replayed
duplicate is seen as one), accuracy against the true label the producer put in a header, and the
frame -> prediction latency (capture time to prediction time).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from kafka import TopicPartition

from framestream import kafka_clients
from framestream.errors import DeadlineExceeded
from framestream.kafka_clients import KafkaLike
from framestream.records import COPY_FIELDS, DeadLetter, Prediction


def end_offsets(bootstrap: KafkaLike, topic: str, timeout: float = 30.0) -> dict[int, int]:
    """The next offset to be written, per partition. ``bootstrap``: a string or KafkaSettings;
    the consumer carries the FRAMESTREAM_KAFKA_* security settings either way."""
    consumer = kafka_clients.consumer(bootstrap, enable_auto_commit=False,
                                      request_timeout_ms=int(timeout * 1000) + 1000)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        return {tp.partition: off for tp, off in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


def spark_offsets(topic: str, offsets: dict[int, int]) -> str:
    """Spark's ``startingOffsets`` JSON for the given partition offsets."""
    return json.dumps({topic: {str(p): o for p, o in offsets.items()}})


def read_topic(bootstrap: KafkaLike, topic: str, start: dict[int, int] | None = None,
               count: int | None = None, timeout: float = 60.0) -> list[Any]:
    """Records of ``topic`` from ``start`` (default: the beginning) until ``count`` records were
    read, or until the end of the topic when ``count`` is None. Raises DeadlineExceeded when
    ``count`` records do not arrive within ``timeout`` seconds."""
    consumer = kafka_clients.consumer(bootstrap, enable_auto_commit=False, group_id=None,
                                      consumer_timeout_ms=1000)
    records: list[Any] = []
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, (start or {}).get(tp.partition, 0))
        ends = consumer.end_offsets(tps)
        deadline = time.monotonic() + timeout
        while True:
            for record in consumer:
                records.append(record)
                if count is not None and len(records) >= count:
                    return records
            if count is None and all(consumer.position(tp) >= ends[tp] for tp in tps):
                return records
            if time.monotonic() > deadline:
                if count is None:
                    return records
                raise DeadlineExceeded("read_topic", f"{count} records on {topic}", timeout,
                                       detail=f"got {len(records)}")
    finally:
        consumer.close()


def headers_of(record: Any) -> dict[str, bytes]:
    return {k: v for k, v in (record.headers or [])}


@dataclass
class Summary:
    frames_in: int
    predictions: int                  # distinct source offsets with a prediction
    dead_letters: int                 # distinct source offsets in the DLQ
    duplicates: int                   # extra copies (replays), all identical but prediction_ts
    conflicting: int                  # offsets answered twice differently: must be 0
    accuracy: float | None
    frames_per_s: float | None
    latency_p50_s: float | None
    latency_p99_s: float | None
    reasons: dict[str, int] = field(default_factory=dict)
    versions: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        def fmt(v: float | None, unit: str = "", spec: str = ".3f") -> str:
            return "n/a" if v is None else f"{v:{spec}}{unit}"

        return [f"frames in        {self.frames_in}",
                f"predictions      {self.predictions}",
                f"dead letters     {self.dead_letters}  {self.reasons}",
                f"accounted        {self.predictions + self.dead_letters == self.frames_in}"
                f" (duplicates {self.duplicates}, conflicting {self.conflicting})",
                f"frames/s         {fmt(self.frames_per_s, '', '.0f')}",
                f"latency p50/p99  {fmt(self.latency_p50_s, ' s')} / {fmt(self.latency_p99_s, ' s')}",
                f"accuracy         {fmt(self.accuracy, '', '.4f')}",
                f"model versions   {', '.join(self.versions)}"]


def identity(prediction: dict[str, Any]) -> dict[str, Any]:
    """What must be equal between two copies of one prediction: the answer, not the copy."""
    return {k: v for k, v in prediction.items() if k not in COPY_FIELDS}


def summarize(frames_in: int, prediction_records: Iterable[Any],
              dlq_records: Iterable[Any]) -> Summary:
    by_offset: dict[tuple[str, int, int], Prediction] = {}
    duplicates = conflicting = 0
    for record in prediction_records:
        p = Prediction.from_record(record)
        if p.source in by_offset:
            duplicates += 1
            conflicting += by_offset[p.source].identity() != p.identity()
        else:
            by_offset[p.source] = p
    dead: dict[tuple[str, int, int], str] = {}
    for record in dlq_records:
        letter = DeadLetter.from_record(record)
        dead[letter.source] = letter.reason.value
    preds = list(by_offset.values())
    labelled = [p for p in preds if p.label is not None]
    accuracy = (sum(p.class_index == p.label for p in labelled) / len(labelled)
                if labelled else None)
    captured = [p for p in preds if p.capture_ts is not None]
    lat = np.array([p.prediction_ts - p.capture_ts for p in captured])  # type: ignore[operator]
    fps = None
    if preds and any(p.capture_ts for p in preds):
        first = min(p.capture_ts for p in captured)  # type: ignore[type-var]
        last = max(p.prediction_ts for p in preds)
        fps = len(preds) / (last - first) if last > first else None
    reasons: dict[str, int] = {}
    for r in dead.values():
        reasons[r] = reasons.get(r, 0) + 1
    return Summary(frames_in, len(preds), len(dead), duplicates, conflicting, accuracy, fps,
                   float(np.percentile(lat, 50)) if lat.size else None,
                   float(np.percentile(lat, 99)) if lat.size else None, reasons,
                   sorted({p.model_version for p in preds}))
