"""The real broker: what is produced is what is consumed, per key, exactly."""

from __future__ import annotations

import collections

import pytest
from kafka import KafkaConsumer, KafkaProducer

pytestmark = pytest.mark.kafka


def test_thousand_keyed_frames_come_back_exactly(kafka_bootstrap: str, new_topic) -> None:
    topic = new_topic(partitions=4)
    sent = {f"frame-{i}".encode(): f"camera-{i % 13}".encode() for i in range(1000)}
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=5)
    for value, key in sent.items():
        producer.send(topic, key=key, value=value)
    producer.flush(timeout=30)
    producer.close(timeout=10)

    consumer = KafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, group_id=None, consumer_timeout_ms=10_000)
    got: dict[bytes, bytes] = {}
    partitions_of_key: dict[bytes, set[int]] = collections.defaultdict(set)
    try:
        for record in consumer:
            got[record.value] = record.key
            partitions_of_key[record.key].add(record.partition)
            if len(got) == len(sent):
                break
    finally:
        consumer.close()

    assert got == sent  # every frame, with its key, exactly once (values are unique)
    assert all(len(p) == 1 for p in partitions_of_key.values())  # one key -> one partition
    assert len({p for ps in partitions_of_key.values() for p in ps}) > 1  # spread over partitions
