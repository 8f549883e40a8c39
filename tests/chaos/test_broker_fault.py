"""Chaos on Kafka while a steady stream runs: the broker stops (20 s in ``make chaos``, shorter in
CI) and starts again on the same data. The stream waits, then catches up; the producer retries
(idempotent) until its deadline; every frame is answered. A private broker on free ports: the
session's broker is never stopped."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from framestream.config import BrokerSettings
from framestream.producer import ProducerSettings
from framestream.kafka_admin import ensure_topics
from stack.kafka_broker import KafkaBroker
from tests.chaos.harness import ChaosStream, Profile, assert_conserved, record
from tests.conftest import free_port

pytestmark = [pytest.mark.chaos, pytest.mark.spark, pytest.mark.kafka, pytest.mark.mpi,
              pytest.mark.slow]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[KafkaBroker]:
    b = KafkaBroker(tmp_path / "kafka", BrokerSettings.load(port=free_port(),
                                                            controller_port=free_port()))
    b.start()
    yield b
    b.stop()


def test_broker_down_then_back(broker: KafkaBroker, tmp_path: Path, prof: Profile) -> None:
    topics = {t: f"chaos-{t}-{uuid.uuid4().hex[:8]}" for t in ("frames", "predictions", "dlq")}
    ensure_topics(broker.bootstrap, list(topics.values()), 4)
    run = ChaosStream(broker.bootstrap, topics, tmp_path, prof)
    run.start()
    try:
        # the producer keeps retrying through the outage (kafka-python, idempotent, acks=all)
        run.produce(ProducerSettings.load(deadline_s=prof.broker_outage_s + 90))
        run.settle()
        run.fault_start()
        broker.stop()
        try:
            time.sleep(prof.broker_outage_s)  # the fault's stated duration
        finally:
            broker.start()
        run.fault_end()
        b = run.finish()
    finally:
        code = run.stop()  # (kafka-python's leaked sockets: see filterwarnings in pyproject)
    assert code == 0, run.log_tail()
    assert_conserved(b, run.total)
    assert run.stats()["rank_restarts"] == 0
    record("broker_outage", f"stop the Kafka broker for {prof.broker_outage_s:g} s, start it "
           f"again (same data)", prof, b, outage_s=prof.broker_outage_s,
           back_after_s=round(run.t1 - run.t0, 3))
