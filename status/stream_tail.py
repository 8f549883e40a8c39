"""What the stream did, read back from Kafka: a thread that tails ``predictions`` and
``frames.dlq`` from their beginning and samples the ``frames`` watermarks.

Counts are records on the output topics (a replayed offset written twice counts twice, as
reading the topic back would). Lag per ``frames`` partition is the high watermark minus the
offset after the highest source offset answered there (by a prediction or a dead letter): the
stream's own progress, measured from its output, so it works the same whether the status
service runs in the driver or alone (Spark's Kafka source commits no consumer group).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from typing import Any

import numpy as np
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from framestream import kafka_clients
from framestream.config import KafkaSettings
from framestream.records import DLQ_DETAIL, DLQ_REASON, DeadLetter, Prediction

log = logging.getLogger(__name__)

HISTORY = 120          # samples kept for the rate chart
RATE_WINDOW_S = 5.0    # rates are averaged over this much of the recent samples


def _header(headers: list[tuple[str, bytes]] | None, name: str) -> str:
    for k, v in headers or []:
        if k == name:
            return (v or b"").decode("utf-8", errors="replace")
    return ""


class StreamTail:
    """Call :meth:`start`, read :meth:`snapshot` from any thread, :meth:`stop` at the end."""

    def __init__(self, kafka: KafkaSettings, refresh_s: float = 1.0,
                 latency_window: int = 5000, keep_dead: int = 10) -> None:
        self.kafka, self.refresh_s = kafka, refresh_s
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.predictions = self.dead_letters = self.unreadable = 0
        self.reasons: Counter[str] = Counter()
        self.last_dead: deque[dict[str, Any]] = deque(maxlen=keep_dead)
        self.versions: dict[str, dict[str, Any]] = {}
        self.latency: deque[float] = deque(maxlen=latency_window)
        # frames partition -> the offset after the highest one answered there
        self.answered: dict[int, int] = {}
        self.frames_begin: dict[int, int] = {}
        self.frames_end: dict[int, int] = {}
        self.samples: deque[tuple[float, int, int, int]] = deque(maxlen=HISTORY)
        self.rates: deque[dict[str, float]] = deque(maxlen=HISTORY)
        self.error = ""
        self.ready = False
        self._thread = threading.Thread(target=self._run, name="status-kafka", daemon=True)

    def start(self) -> "StreamTail":
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    # --- the thread ----------------------------------------------------------------------------
    def _consumer(self) -> KafkaConsumer:
        k = self.kafka
        return kafka_clients.consumer(k, group_id=None, enable_auto_commit=False,
                                      request_timeout_ms=int(k.request_timeout_s * 1000) + 1000)

    def _partitions(self, consumer: KafkaConsumer, topic: str) -> list[TopicPartition]:
        parts = consumer.partitions_for_topic(topic) or set()
        return [TopicPartition(topic, p) for p in sorted(parts)]

    def _run(self) -> None:
        consumer = None
        while not self._stop.is_set():
            try:
                if consumer is None:
                    consumer = self._consumer()
                    outputs = (self._partitions(consumer, self.kafka.predictions_topic)
                               + self._partitions(consumer, self.kafka.dlq_topic))
                    frames = self._partitions(consumer, self.kafka.frames_topic)
                    if not outputs or not frames:
                        raise KafkaError(f"topics {self.kafka.frames_topic}, "
                                         f"{self.kafka.predictions_topic}, {self.kafka.dlq_topic}"
                                         f" not all there yet")
                    consumer.assign(outputs)
                    consumer.seek_to_beginning(*outputs)
                    self.frames_begin = {tp.partition: o for tp, o in
                                         consumer.beginning_offsets(frames).items()}
                    next_sample = 0.0
                batch = consumer.poll(timeout_ms=int(self.refresh_s * 500), max_records=5000)
                with self._lock:
                    for records in batch.values():
                        for r in records:
                            self._take(r)
                if time.monotonic() >= next_sample:
                    next_sample = time.monotonic() + self.refresh_s
                    ends = consumer.end_offsets(frames)
                    self._sample({tp.partition: o for tp, o in ends.items()})
                self.error, self.ready = "", True
            except (KafkaError, OSError) as exc:  # broker down or topics missing: keep trying
                if self.error != str(exc):
                    log.warning("status: cannot read the stream's topics: %s", exc)
                self.error = str(exc)
                if consumer is not None:
                    consumer.close()
                    consumer = None
                self._stop.wait(2.0)
        if consumer is not None:
            consumer.close()

    def _answer(self, topic: str, partition: int, offset: int) -> None:
        if topic == self.kafka.frames_topic:
            self.answered[partition] = max(self.answered.get(partition, 0), offset + 1)

    def _take(self, r: Any) -> None:
        if r.topic == self.kafka.dlq_topic:
            self.dead_letters += 1
            try:
                letter = DeadLetter.from_record(r)
            except (KeyError, ValueError):  # not one our sink wrote: counted, shown as it is
                reason = _header(r.headers, DLQ_REASON) or "unknown"
                src, detail = ("", -1, -1), _header(r.headers, DLQ_DETAIL)
            else:
                reason, src, detail = letter.reason.value, letter.source, letter.detail
                self._answer(*src)
            self.reasons[reason] += 1
            self.last_dead.appendleft({"topic": src[0], "partition": src[1], "offset": src[2],
                                       "reason": reason, "detail": detail[:300],
                                       "at": r.timestamp / 1000.0})
            return
        try:
            p = Prediction.from_record(r)
        except (ValueError, KeyError, TypeError):
            self.unreadable += 1
            return
        version, pred_ts = p.model_version, p.prediction_ts
        self.predictions += 1
        v = self.versions.setdefault(version, {"version": version, "predictions": 0,
                                               "first_ts": pred_ts, "last_ts": pred_ts})
        v["predictions"] += 1
        v["first_ts"], v["last_ts"] = min(v["first_ts"], pred_ts), max(v["last_ts"], pred_ts)
        if isinstance(p.capture_ts, (int, float)):
            self.latency.append(pred_ts - p.capture_ts)
        self._answer(str(p.topic), p.partition, p.offset)

    def _sample(self, ends: dict[int, int]) -> None:
        with self._lock:
            self.frames_end = ends
            now = time.monotonic()
            frames_in = sum(o - self.frames_begin.get(p, 0) for p, o in ends.items())
            self.samples.append((now, frames_in, self.predictions, self.dead_letters))
            old = next((s for s in self.samples if now - s[0] <= RATE_WINDOW_S), self.samples[0])
            dt = now - old[0]
            rate = {"t": time.time(), "frames": 0.0, "predictions": 0.0, "dead_letters": 0.0}
            if dt > 0:
                rate.update(frames=(frames_in - old[1]) / dt, predictions=(self.predictions
                            - old[2]) / dt, dead_letters=(self.dead_letters - old[3]) / dt)
            self.rates.append(rate)

    # --- readers -------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            lat = np.array(self.latency, dtype=float)
            pct = ({f"p{q}": float(np.percentile(lat, q)) for q in (50, 90, 99)}
                   if lat.size else {})
            frames_in = sum(o - self.frames_begin.get(p, 0) for p, o in self.frames_end.items())
            lag = [{"partition": p, "end": end, "answered": self.answered.get(p, 0),
                    "lag": end - max(self.answered.get(p, 0), self.frames_begin.get(p, 0))}
                   for p, end in sorted(self.frames_end.items())]
            return {
                "ready": self.ready, "error": self.error,
                "topics": {"frames": self.kafka.frames_topic,
                           "predictions": self.kafka.predictions_topic,
                           "dlq": self.kafka.dlq_topic},
                "counts": {"frames_in": frames_in, "predictions": self.predictions,
                           "dead_letters": self.dead_letters, "unreadable": self.unreadable},
                "rates": self.rates[-1] if self.rates else None,
                "rate_history": list(self.rates),
                "lag": lag,
                "latency_s": {**pct, "n": int(lat.size)},
                "dead_letters": {"by_reason": dict(self.reasons.most_common()),
                                 "last": list(self.last_dead)},
                "versions": sorted(self.versions.values(), key=lambda v: v["first_ts"]),
            }
