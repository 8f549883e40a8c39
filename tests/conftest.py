"""Session fixtures that start the real engines once and give each test fresh resources.

- ``kafka_bootstrap``: a running broker. Reuses the embedded one (``make up``) when it answers,
  else starts a private broker on free ports under a temp folder and stops it at the end.
- ``new_topic``: fresh uuid-named topics, deleted after the test.
- ``spark``: one local SparkSession with the Kafka source jars.
- ``ray_local``: a local Ray instance with 2 CPUs (module scope).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator

import pytest

from framestream.config import BrokerSettings
from framestream.kafka_admin import broker_answers, delete_topics, ensure_topics
from stack.kafka_broker import KafkaBroker


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pytest_report_header(config: pytest.Config) -> str:
    """Ranks and Spark workers import the installed framestream, not the tests' sys.path: say
    which checkout that is (``make setup`` points the shared venv at the current one)."""
    import importlib.metadata
    import json
    from pathlib import Path

    here = str(Path(__file__).resolve().parents[1])
    try:
        url = json.loads(importlib.metadata.distribution("framestream").read_text(
            "direct_url.json") or "{}").get("url", "")
    except importlib.metadata.PackageNotFoundError:
        url = ""
    where = url.removeprefix("file://") or "nowhere"
    note = "" if where == here else f" (NOT this checkout {here}: run `make setup`)"
    return f"framestream installed from: {where}{note}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not any(item.get_closest_marker("gpu") for item in items):
        return
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="no CUDA device on this machine")
        for item in items:
            if item.get_closest_marker("gpu"):
                item.add_marker(skip)


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    explicit = os.environ.get("FRAMESTREAM_TEST_KAFKA_BOOTSTRAP")
    if explicit:
        yield explicit
        return
    from stack.__main__ import embedded_broker

    embedded = embedded_broker()
    if embedded.running() and broker_answers(embedded.bootstrap, timeout=5):
        yield embedded.bootstrap
        return
    settings = BrokerSettings.load(port=free_port(), controller_port=free_port())
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka"), settings)
    with broker:
        yield broker.bootstrap


@pytest.fixture
def new_topic(kafka_bootstrap: str) -> Iterator[Callable[..., str]]:
    """``new_topic(partitions=4) -> name``: a fresh topic that is deleted after the test."""
    made: list[str] = []

    def make(partitions: int = 4, prefix: str = "test") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        ensure_topics(kafka_bootstrap, [name], partitions)
        made.append(name)
        return name

    yield make
    delete_topics(kafka_bootstrap, made)


@pytest.fixture(scope="session")
def spark():  # type: ignore[no-untyped-def]
    from etl.session import SparkSettings, spark_session

    session = spark_session(SparkSettings.load(ui=False, app_name="framestream-tests"))
    yield session
    session.stop()


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    import ray

    from launcher.ray_cluster import RaySettings, connect

    connect(RaySettings.load(address="local", num_cpus=2))
    yield
    ray.shutdown()
