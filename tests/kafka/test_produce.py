"""python -m jobs.produce against the real broker: what is published is exactly what comes back,
and a lost broker is reported within the deadline instead of hanging."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from kafka import KafkaConsumer, TopicPartition

from etl.decode import decode_batch
from framestream import fashion_mnist
from framestream.config import BrokerSettings
from framestream.exits import SERVICE
from framestream.frames import (CORRUPT_HEADER, EXPECT_HEADER, FORMAT_HEADER, Frame,
                                parse_headers)
from framestream.producer import ProducerSettings, fashion_frames, publish_frames
from jobs import produce
from models.spec import PreprocessSpec
from framestream.kafka_admin import ensure_topics
from stack.kafka_broker import KafkaBroker
from tests.conftest import free_port

pytestmark = pytest.mark.kafka


def consume_all(bootstrap: str, topic: str, expected: int, timeout: float = 30.0) -> list:
    """Every record of ``topic``: reads until the end offsets, which must total ``expected``."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                             consumer_timeout_ms=int(timeout * 1000))
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        end = consumer.end_offsets(parts)
        assert sum(end.values()) == expected
        records, deadline = [], time.monotonic() + timeout
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=1000).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def test_produce_500_frames_and_5_corrupt_come_back_exactly(kafka_bootstrap: str, new_topic,
                                                            capsys) -> None:
    topic = new_topic(partitions=4)
    started = time.time()
    rc = produce.main(["--count", "500", "--corrupt", "5", "--sources", "7", "--seed", "1",
                       "--topic", topic, "--bootstrap", kafka_bootstrap, "--no-progress"])
    assert rc == 0
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert summary.startswith(f"sent 505/505 frames (5 corrupt) to {topic}:")
    assert summary.endswith(", 0 errors")

    records = consume_all(kafka_bootstrap, topic, 505)
    assert len(records) == 505
    frames = [Frame.from_record(r.key, r.value, r.headers) for r in records]
    assert len({f.frame_id for f in frames}) == 505
    assert all(started - 1 <= f.capture_ts <= time.time() for f in frames)

    good = [f for f in frames if f.label is not None]
    bad = [f for f in frames if CORRUPT_HEADER in dict(f.extra)]
    assert len(good) == 500 and len(bad) == 5
    images, labels = fashion_mnist.load("test")
    index = np.array([int(f.sample.rsplit(":", 1)[1]) for f in good])
    assert sorted(index.tolist()) == list(range(500))
    assert [f.key for f in good] == [f"cam-{i % 7}" for i in index]
    assert [f.label for f in good] == labels[index].tolist()
    assert {f.fmt for f in good} == {"png"}
    assert all(parse_headers(r.headers).get(FORMAT_HEADER) == b"png"
               for r in records if r.value and CORRUPT_HEADER not in parse_headers(r.headers))

    decoded = decode_batch([f.value for f in good], PreprocessSpec())
    assert decoded.bad_index.size == 0
    assert np.array_equal(decoded.images[..., 0], images[index])  # pixel for pixel

    rejected = decode_batch([f.value for f in bad], PreprocessSpec())
    assert rejected.ok_index.size == 0
    assert rejected.reasons == [dict(f.extra)[EXPECT_HEADER].decode() for f in bad]
    assert len({dict(f.extra)[CORRUPT_HEADER] for f in bad}) == 5  # five different kinds


def test_produce_without_a_broker_fails_fast_with_a_hint(capsys) -> None:
    started = time.monotonic()
    rc = produce.main(["--count", "3", "--bootstrap", f"127.0.0.1:{free_port()}", "--deadline",
                       "2", "--no-progress"])
    assert rc == SERVICE and time.monotonic() - started < 10  # the exit-code table's 3
    err = capsys.readouterr().err
    assert "no Kafka broker answers" in err and "make up" in err


@pytest.mark.slow
def test_lost_broker_is_reported_within_the_deadline(tmp_path: Path, caplog) -> None:
    # kafka-python logs each refused reconnect with the exception, whose traceback holds the
    # socket it never closed: captured records would keep those sockets alive past this test.
    caplog.set_level(logging.CRITICAL, logger="kafka")
    broker = KafkaBroker(tmp_path, BrokerSettings.load(port=free_port(),
                                                       controller_port=free_port()))
    with broker:
        ensure_topics(broker.bootstrap, ["lossy"], partitions=2)
        deadline = 3.0

        def frames_then_outage() -> Iterator[Frame]:
            for i, frame in enumerate(fashion_frames(10_000)):
                if i == 100:
                    broker.stop()
                yield frame

        started = time.monotonic()
        # (the refused reconnects leak kafka-python's sockets: see filterwarnings in pyproject)
        summary = publish_frames(broker.bootstrap, "lossy", frames_then_outage(), rate=500,
                                 settings=ProducerSettings(deadline_s=deadline))
        took = time.monotonic() - started
    assert 100 <= summary.sent < summary.attempted < 10_000
    assert summary.failed == summary.attempted - summary.sent
    assert summary.first_error
    assert took < 5 * deadline + 10, summary.line()  # stop + retry deadline + flush + close
    assert not math.isnan(summary.frames_per_s)
