"""Kafka for benchmarks: fresh topics per run, bursts of a frame set, and what came out.

Every pipeline, framestream and peers alike, reads its own fresh input topic (4 partitions, the
same frames) and writes JSON predictions with ``topic``, ``partition``, ``offset``, ``label``,
``class_index``, ``capture_ts`` and ``prediction_ts`` to its own output topic. One burst:

- publish ``count`` frames as fast as kafka-python goes (or at ``rate`` frames/s), each stamped
  with its capture time as it is sent, keyed so that every partition gets an equal share
  (:func:`bench.fair.partition_keys`); what landed per partition is read back from the topic;
- wait until ``count`` predictions are on the output topic;
- frames/s = distinct frames / (last ``prediction_ts`` - start), start being the resume of a
  paused pipeline (throughput bursts) or the first frame's capture time (paced bursts); latency
  per frame = its prediction's Kafka timestamp - its capture time (``*_pred_ts`` figures use the
  pipeline's own ``prediction_ts``);
- throughput bursts pause the pipeline (SIGSTOP) while the frames are published and resume it
  when they are all on the topic: the pipeline drains a backlog with the machine to itself
  (see :data:`bench.fair.TIMING`).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from bench.common import percentile
from bench.fair import partition_keys
from bench.frameset import FrameSet
from framestream import results
from framestream.producer import ProducerSettings, make_producer, publish_frames
from framestream.kafka_admin import delete_topics, ensure_topics

log = logging.getLogger(__name__)


def topic_names(run: str, *parts: str) -> str:
    return "bench-" + "-".join([run, *parts])


def new_run_id() -> str:
    return uuid.uuid4().hex[:6]


def make_topics(bootstrap: str, names: list[str], partitions: int = 4) -> None:
    ensure_topics(bootstrap, names, partitions)


def drop_topics(bootstrap: str, names: list[str]) -> None:
    try:
        delete_topics(bootstrap, names)
    except Exception as exc:  # leftovers only cost disk; never fail a finished benchmark
        log.warning("could not delete topics %s: %s", names, exc)


class Outputs:
    """Watches one output topic: end offsets now, wait for more, read them back."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self._consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        parts = None
        deadline = time.monotonic() + 30
        while not parts and time.monotonic() < deadline:
            parts = self._consumer.partitions_for_topic(topic)
            if not parts:
                time.sleep(0.2)
        if not parts:
            raise TimeoutError(f"topic {topic} has no partitions after 30s")
        self._tps = [TopicPartition(topic, p) for p in sorted(parts)]

    def offsets(self) -> dict[int, int]:
        return {tp.partition: o for tp, o in self._consumer.end_offsets(self._tps).items()}

    def wait(self, since: dict[int, int], count: int, timeout: float,
             alive: Any = None) -> int:
        """Wait until ``count`` records were written after ``since``; returns how many were."""
        deadline = time.monotonic() + timeout
        while True:
            got = sum(self.offsets().values()) - sum(since.values())
            if got >= count:
                return got
            if alive is not None and not alive():
                raise RuntimeError(f"the pipeline writing {self.topic} died ({got}/{count} out)")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{got}/{count} predictions on {self.topic} after {timeout:.0f}s")
            time.sleep(0.1)

    def read(self, since: dict[int, int], count: int) -> list[Any]:
        return results.read_topic(self.bootstrap, self.topic, since, count=count, timeout=120)

    def close(self) -> None:
        self._consumer.close()


@dataclass
class Publisher:
    """One kafka-python producer reused for every burst (framestream's producer settings), keying
    frames round-robin over one key per partition of a ``partitions``-partition topic."""

    bootstrap: str
    partitions: int = 4
    run: str = ""

    def __post_init__(self) -> None:
        self.settings = ProducerSettings.load(linger_ms=5)
        self.producer: Any = None
        self.topic = ""
        self.keys = partition_keys(self.partitions)
        self.run = self.run or new_run_id()

    def _producer_for(self, topic: str) -> Any:
        """A producer of its own for each topic, made outside any timed window.

        kafka-python 3.0.12's sender thread spins (a whole core, in ``expired_batches`` and
        0-timeout polls) once a topic it has sent to is deleted: ``unknown_leaders_exist`` stays
        true and it re-polls at once. The bench deletes each setting's topics, so one producer
        kept for the whole run ate ~0.9 of a core of this 2-core machine through every timed
        burst (seen with py-spy in the run of 2026-12-02 and, as "benchmark process", in the
        breakdown of the run the README quoted before)."""
        if topic != self.topic or self.producer is None:
            self.close()
            self.producer = make_producer(self.bootstrap, self.settings,
                                          max_request_bytes=4 << 20)
            self.topic = topic
        return self.producer

    def send(self, fs: FrameSet, topic: str, count: int, rate: float = 0.0,
             start: int = 0) -> dict[str, Any]:
        producer = self._producer_for(topic)
        before = results.end_offsets(self.bootstrap, topic)
        frames = fs.frames(count, self.keys, start=start, run=self.run)
        summary = publish_frames(self.bootstrap, topic, frames, rate=rate,
                                 settings=self.settings, producer=producer)
        if summary.failed:
            raise RuntimeError(f"publishing to {topic}: {summary.line()}")
        after = results.end_offsets(self.bootstrap, topic)
        return {"sent": summary.sent, "seconds": round(summary.seconds, 3),
                "frames_per_s": round(summary.frames_per_s, 1), "bytes": summary.bytes,
                "per_partition": {str(p): after[p] - before.get(p, 0) for p in sorted(after)}}

    def close(self) -> None:
        if self.producer is not None:
            self.producer.close(timeout=10)
            self.producer = None


def burst(pub: Publisher, fs: FrameSet, topic_in: str, out: Outputs, count: int,
          rate: float = 0.0, timeout: float = 600.0, alive: Any = None, start: int = 0,
          gate: Any = None, on_done: Any = None) -> dict[str, Any]:
    """Publish ``count`` frames of ``fs`` to ``topic_in`` and measure their predictions.

    With ``gate`` (a pipeline with ``pause``/``resume``) the pipeline is paused while the frames
    are published, so it starts on a full backlog with the producer idle: frames/s is then
    measured from the moment it resumes (``backlog`` mode; latency is not meaningful there).
    """
    since = out.offsets()
    if gate is not None:
        gate.pause()
    try:
        sent = pub.send(fs, topic_in, count, rate, start)
        if gate is not None and hasattr(gate, "prepare"):
            gate.prepare()  # e.g. start profilers: before the clock starts, not inside it
        resumed = time.time()
    finally:
        if gate is not None:
            gate.resume()
    out.wait(since, count, timeout, alive)
    if on_done is not None:
        on_done()  # before reading the predictions back (that costs this process CPU)
    records = out.read(since, count)
    return {"count": count, "rate": rate, "producer": sent, "backlog": gate is not None,
            "started": resumed if gate is not None else None,
            **summarize(records, count, resumed if gate is not None else None),
            "records": records}


def summarize(records: list[Any], count: int, started: float | None = None) -> dict[str, Any]:
    """Frames/s, latency percentiles and accuracy of one burst's prediction records."""
    seen: dict[tuple[Any, ...], tuple[dict[str, Any], float]] = {}
    for r in records:
        p = json.loads(r.value)
        seen.setdefault((p["topic"], p["partition"], p["offset"]), (p, r.timestamp / 1000.0))
    preds = list(seen.values())
    capture = [p["capture_ts"] for p, _ in preds if p.get("capture_ts") is not None]
    lat_kafka = [ts - p["capture_ts"] for p, ts in preds if p.get("capture_ts") is not None]
    lat_pred = [p["prediction_ts"] - p["capture_ts"] for p, _ in preds
                if p.get("capture_ts") is not None]
    first, last_kafka = started or min(capture), max(ts for _, ts in preds)
    last = max(p["prediction_ts"] for p, _ in preds)
    labelled = [p for p, _ in preds if p.get("label") is not None]
    correct = sum(p["class_index"] == p["label"] for p in labelled)

    def pct(xs: list[float], q: float) -> float | None:
        v = percentile(xs, q)
        return round(v, 4) if v is not None else None

    return {"predictions": len(preds), "duplicates": len(records) - len(preds),
            "seconds": round(last - first, 3),
            "frames_per_s": round(len(preds) / (last - first), 1) if last > first else None,
            "frames_per_s_kafka_ts": (round(len(preds) / (last_kafka - first), 1)
                                      if last_kafka > first else None),
            "latency_p50_s": pct(lat_kafka, 50), "latency_p95_s": pct(lat_kafka, 95),
            "latency_p99_s": pct(lat_kafka, 99), "latency_max_s": pct(lat_kafka, 100),
            "latency_p50_s_pred_ts": pct(lat_pred, 50), "latency_p99_s_pred_ts": pct(lat_pred, 99),
            "accuracy": round(correct / len(labelled), 4) if labelled else None,
            "missing": count - len(preds)}
