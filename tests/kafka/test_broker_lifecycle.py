"""The embedded broker's start-up and shutdown, with the errors a user would see."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from framestream.config import BrokerSettings
from framestream.errors import ConfigError, ServiceError
from framestream.kafka_admin import broker_answers
from stack.kafka_broker import KafkaBroker
from tests.conftest import free_port

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def test_broker_starts_answers_and_stops(tmp_path: Path) -> None:
    broker = KafkaBroker(tmp_path, BrokerSettings.load(port=free_port(), controller_port=free_port()))
    with broker:
        assert broker.running()
        assert broker_answers(broker.bootstrap, timeout=5)
        assert (tmp_path / "data" / "meta.properties").exists()  # storage formatted once
    assert not broker.running()
    assert not broker_answers(broker.bootstrap, timeout=1)
    assert not broker.pidfile.exists()


def test_broker_that_cannot_start_names_its_log(tmp_path: Path) -> None:
    with socket.socket() as taken:  # hold the controller port so the broker's bind fails
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        broker = KafkaBroker(tmp_path, BrokerSettings.load(port=free_port(), controller_port=port))
        with pytest.raises(ServiceError) as err:
            broker.start(timeout=60)
    assert str(broker.logfile) in str(err.value)
    assert not broker.running()


def test_bad_broker_setting_names_the_setting() -> None:
    with pytest.raises(ConfigError, match="FRAMESTREAM_BROKER_HEAP"):
        BrokerSettings.load(heap="lots")
