"""The table of framestream settings, one frozen dataclass per subsystem.

Each field is overridable by ``FRAMESTREAM_<SECTION>_<FIELD>`` (see :mod:`framestream.settings`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from framestream.errors import ConfigError
from framestream.settings import check, settings_section


def _hostport(value: str) -> bool:
    parts = [p.rpartition(":") for p in value.split(",")]
    return all(host and port.isdigit() and 0 < int(port) < 65536 for host, _, port in parts)


#: Room the sink's ``max.request.size`` keeps above the largest legal frame
#: (FRAMESTREAM_LIMITS_MAX_BYTES): Kafka's record framing, the frame's key and headers as a dead
#: letter copies them (16 KiB each at most) and the ``fs-dlq-*`` headers (about 1.2 KiB).
SINK_HEADROOM_BYTES = 64 * 1024

_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
_SASL_MODULES = {"PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
                 "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
                 "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule"}


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
    # The largest record the stream's sink writes (Kafka's max.request.size): 0 = the largest
    # legal frame (FRAMESTREAM_LIMITS_MAX_BYTES) + SINK_HEADROOM_BYTES. Dead letters are cut to
    # fit it; `predictions` and `frames.dlq` must allow it (max.message.bytes), checked at start.
    max_request_bytes: int = field(default=0, metadata=check(
        lambda v: v == 0 or v >= 2 * SINK_HEADROOM_BYTES,
        f"0 (derived from FRAMESTREAM_LIMITS_MAX_BYTES) or >= {2 * SINK_HEADROOM_BYTES}"))
    # Security, passed to every Kafka client framestream makes: Spark's source and sink (Java
    # kafka-clients) and the producer (kafka-python). See security_options / java_options.
    security_protocol: str = field(default="PLAINTEXT", metadata=check(
        lambda v: v in _PROTOCOLS, " | ".join(_PROTOCOLS)))
    sasl_mechanism: str = field(default="", metadata=check(
        lambda v: v in ("", *_SASL_MODULES), "empty or " + " | ".join(_SASL_MODULES)))
    sasl_username: str = ""
    sasl_password: str = field(default="", repr=False)  # or sasl_password_file
    sasl_password_file: str = ""
    ssl_cafile: str = ""                 # PEM bundle of CAs that sign the brokers' certificates
    ssl_keystore: str = ""               # PEM file with this client's key + certificate (mTLS)
    ssl_check_hostname: bool = True

    def topics(self) -> tuple[str, ...]:
        return (self.frames_topic, self.predictions_topic, self.dlq_topic, self.labels_topic)

    def __post_init__(self) -> None:
        sasl = self.security_protocol.startswith("SASL_")
        if sasl and not (self.sasl_mechanism and self.sasl_username
                         and (self.sasl_password or self.sasl_password_file)):
            raise ConfigError("FRAMESTREAM_KAFKA_SASL_MECHANISM", self.sasl_mechanism,
                              f"a mechanism, FRAMESTREAM_KAFKA_SASL_USERNAME and a password "
                              f"(_SASL_PASSWORD or _SASL_PASSWORD_FILE) for "
                              f"{self.security_protocol}")
        for name in ("sasl_password_file", "ssl_cafile", "ssl_keystore"):
            path = getattr(self, name)
            if path and not Path(path).expanduser().is_file():
                raise ConfigError(f"FRAMESTREAM_KAFKA_{name.upper()}", path, "a readable file")

    def _password(self) -> str:
        if self.sasl_password_file:
            return Path(self.sasl_password_file).expanduser().read_text().strip()
        return self.sasl_password

    def security_options(self) -> dict[str, Any]:
        """kafka-python keyword arguments (KafkaProducer, KafkaConsumer, KafkaAdminClient)."""
        opts: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.security_protocol.startswith("SASL_"):
            opts.update(sasl_mechanism=self.sasl_mechanism, sasl_plain_username=self.sasl_username,
                        sasl_plain_password=self._password())
        if self.security_protocol.endswith("SSL"):
            opts.update(ssl_check_hostname=self.ssl_check_hostname)
            if self.ssl_cafile:
                opts["ssl_cafile"] = self.ssl_cafile
            if self.ssl_keystore:  # one PEM with key and certificate: load_cert_chain reads both
                opts["ssl_certfile"] = self.ssl_keystore
        return opts

    def java_options(self) -> dict[str, str]:
        """Java kafka-clients properties; Spark's Kafka source and sink take them as options
        prefixed with ``kafka.`` (see :meth:`spark_options`)."""
        opts = {"security.protocol": self.security_protocol}
        if self.security_protocol.startswith("SASL_"):
            def quoted(v: str) -> str:
                return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'

            opts["sasl.mechanism"] = self.sasl_mechanism
            opts["sasl.jaas.config"] = (f"{_SASL_MODULES[self.sasl_mechanism]} required "
                                        f"username={quoted(self.sasl_username)} "
                                        f"password={quoted(self._password())};")
        if self.security_protocol.endswith("SSL"):
            if self.ssl_cafile:
                opts.update({"ssl.truststore.type": "PEM",
                             "ssl.truststore.location": self.ssl_cafile})
            if self.ssl_keystore:
                opts.update({"ssl.keystore.type": "PEM",
                             "ssl.keystore.location": self.ssl_keystore})
            if not self.ssl_check_hostname:
                opts["ssl.endpoint.identification.algorithm"] = ""
        return opts

    def sink_request_bytes(self, max_frame_bytes: int) -> int:
        """The sink producer's ``max.request.size``: FRAMESTREAM_KAFKA_MAX_REQUEST_BYTES, or the
        largest legal frame plus :data:`SINK_HEADROOM_BYTES` (so no legal frame's dead letter is
        ever cut, and none is ever refused by the client)."""
        return self.max_request_bytes or max_frame_bytes + SINK_HEADROOM_BYTES

    def spark_options(self) -> dict[str, str]:
        """Options for ``spark.readStream/read/write.format("kafka")``: servers + security."""
        return {"kafka.bootstrap.servers": self.bootstrap,
                **{f"kafka.{k}": v for k, v in self.java_options().items()}}


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
