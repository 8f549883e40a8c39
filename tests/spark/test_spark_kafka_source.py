"""Spark's official Kafka source: an availableNow query reads exactly what was produced, once."""

from __future__ import annotations

from pathlib import Path

import pytest
from kafka import KafkaProducer

pytestmark = [pytest.mark.spark, pytest.mark.kafka, pytest.mark.slow]


def _produce(bootstrap: str, topic: str, start: int, count: int) -> set[str]:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for i in range(start, start + count):
        producer.send(topic, key=f"cam-{i % 5}".encode(), value=f"frame-{i}".encode())
    producer.flush(timeout=30)
    producer.close(timeout=10)
    return {f"frame-{i}" for i in range(start, start + count)}


def _run_available_now(spark, bootstrap: str, topic: str, checkpoint: Path) -> list[str]:
    seen: list[str] = []

    def collect(batch, batch_id: int) -> None:
        seen.extend(r.value for r in batch.selectExpr("CAST(value AS STRING) AS value").collect())

    stream = (spark.readStream.format("kafka")
              .option("kafka.bootstrap.servers", bootstrap)
              .option("subscribe", topic)
              .option("startingOffsets", "earliest")
              .load())
    query = (stream.writeStream.foreachBatch(collect)
             .option("checkpointLocation", str(checkpoint))
             .trigger(availableNow=True).start())
    assert query.awaitTermination(timeout=180), "availableNow query did not finish in 180 s"
    assert query.exception() is None
    return seen


def test_reads_exactly_the_produced_frames_then_none_from_checkpoint(
        spark, kafka_bootstrap: str, new_topic, tmp_path: Path) -> None:
    topic = new_topic(partitions=4)
    checkpoint = tmp_path / "checkpoint"
    first = _produce(kafka_bootstrap, topic, 0, 500)

    seen = _run_available_now(spark, kafka_bootstrap, topic, checkpoint)
    assert sorted(seen) == sorted(first)  # all of them, no duplicates

    assert _run_available_now(spark, kafka_bootstrap, topic, checkpoint) == []  # nothing twice

    later = _produce(kafka_bootstrap, topic, 500, 50)
    assert sorted(_run_available_now(spark, kafka_bootstrap, topic, checkpoint)) == sorted(later)
