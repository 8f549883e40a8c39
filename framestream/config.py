"""The table of framestream settings, one frozen dataclass per subsystem.

Each field is overridable by ``FRAMESTREAM_<SECTION>_<FIELD>`` (see :mod:`framestream.settings`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from framestream.settings import check, settings_section


def _hostport(value: str) -> bool:
    parts = [p.rpartition(":") for p in value.split(",")]
    return all(host and port.isdigit() and 0 < int(port) < 65536 for host, _, port in parts)


@settings_section("kafka")
@dataclass(frozen=True)
class KafkaSettings:
    """Kafka cluster and topic names. ``bootstrap`` is a comma list of host:port."""

    bootstrap: str = field(default="127.0.0.1:9092",
                           metadata=check(_hostport, "host:port[,host:port...]"))
    partitions: int = field(default=4, metadata=check(lambda v: 1 <= v <= 1024, "1..1024"))
    frames_topic: str = "frames"
    predictions_topic: str = "predictions"
    dlq_topic: str = "frames.dlq"
    labels_topic: str = "labels"
    request_timeout_s: float = field(default=30.0, metadata=check(lambda v: v > 0, "> 0"))

    def topics(self) -> tuple[str, ...]:
        return (self.frames_topic, self.predictions_topic, self.dlq_topic, self.labels_topic)


@settings_section("broker")
@dataclass(frozen=True)
class BrokerSettings:
    """The embedded single-node KRaft broker that `make up` and the test fixtures run."""

    host: str = "127.0.0.1"
    port: int = field(default=9092, metadata=check(lambda v: 0 < v < 65536, "a TCP port"))
    controller_port: int = field(default=9093, metadata=check(lambda v: 0 < v < 65536, "a TCP port"))
    heap: str = field(default="512m", metadata=check(lambda v: v[:-1].isdigit() and v[-1] in "mg",
                                                      "a JVM heap size such as 512m or 1g"))
    start_timeout_s: float = field(default=90.0, metadata=check(lambda v: v > 0, "> 0"))
    stop_timeout_s: float = field(default=30.0, metadata=check(lambda v: v > 0, "> 0"))

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"
