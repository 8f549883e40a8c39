"""The Kafka settings every role shares (cluster, topics, security) and the embedded broker's.

Each field is overridable by ``FRAMESTREAM_<SECTION>_<FIELD>`` (see :mod:`framestream.settings`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import model_validator

from framestream.errors import ConfigError
from framestream.settings import Section, section, setting


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


class KafkaSettings(Section):
    """Kafka cluster and topic names. ``bootstrap`` is a comma list of host:port."""

    model_config = section("kafka")

    bootstrap: str = setting("127.0.0.1:9092", "Kafka bootstrap servers (comma list of host:port)",
                             ok=_hostport, expected="host:port[,host:port...]")
    partitions: int = setting(4, "partitions of the topics framestream creates",
                              ok=lambda v: 1 <= v <= 1024, expected="1..1024")
    frames_topic: str = setting("frames", "topic of encoded frames (key = source id)")
    predictions_topic: str = setting("predictions", "topic of JSON predictions")
    dlq_topic: str = setting("frames.dlq", "dead-letter topic: frames that could not be "
                                           "classified, with the reason")
    labels_topic: str = setting("labels", "topic of labeled frames for retraining")
    request_timeout_s: float = setting(30.0, "seconds a Kafka client waits for the broker",
                                       ok=lambda v: v > 0, expected="> 0")
    max_request_bytes: int = setting(
        0, "largest record the stream's sink writes (Kafka's max.request.size); 0 = "
           "FRAMESTREAM_LIMITS_MAX_BYTES + 64 KiB. Dead letters are cut to fit it",
        ok=lambda v: v == 0 or v >= 2 * SINK_HEADROOM_BYTES,
        expected=f"0 (derived from FRAMESTREAM_LIMITS_MAX_BYTES) or >= {2 * SINK_HEADROOM_BYTES}")
    # Security, passed to every Kafka client framestream makes: Spark's source and sink (Java
    # kafka-clients) and the producer (kafka-python). See security_options / java_options.
    security_protocol: str = setting("PLAINTEXT", "Kafka security.protocol of every client",
                                     ok=lambda v: v in _PROTOCOLS, expected=" | ".join(_PROTOCOLS))
    sasl_mechanism: str = setting("", "SASL mechanism (with a SASL_* protocol)",
                                  ok=lambda v: v in ("", *_SASL_MODULES),
                                  expected="empty or " + " | ".join(_SASL_MODULES))
    sasl_username: str = setting("", "SASL user name")
    sasl_password: str = setting("", "SASL password (or FRAMESTREAM_KAFKA_SASL_PASSWORD_FILE)",
                                 secret=True)
    sasl_password_file: str = setting("", "file holding the SASL password")
    ssl_cafile: str = setting("", "PEM bundle of the CAs that sign the brokers' certificates")
    ssl_keystore: str = setting("", "PEM file with this client's key and certificate (mTLS)")
    ssl_check_hostname: bool = setting(True, "check the brokers' certificate host names")

    def topics(self) -> tuple[str, ...]:
        return (self.frames_topic, self.predictions_topic, self.dlq_topic, self.labels_topic)

    @model_validator(mode="after")
    def _security_complete(self) -> "KafkaSettings":
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
        return self

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


class BrokerSettings(Section):
    """The embedded single-node KRaft broker that `make up` and the test fixtures run."""

    model_config = section("broker")

    host: str = setting("127.0.0.1", "address the embedded broker listens on")
    port: int = setting(9092, "the embedded broker's client port",
                        ok=lambda v: 0 < v < 65536, expected="a TCP port")
    controller_port: int = setting(9093, "the embedded broker's KRaft controller port",
                                   ok=lambda v: 0 < v < 65536, expected="a TCP port")
    heap: str = setting("512m", "the embedded broker's JVM heap (-Xmx)",
                        ok=lambda v: v[:-1].isdigit() and v[-1] in "mg",
                        expected="a JVM heap size such as 512m or 1g")
    start_timeout_s: float = setting(90.0, "seconds to wait for the embedded broker to answer",
                                     ok=lambda v: v > 0, expected="> 0")
    stop_timeout_s: float = setting(30.0, "seconds to wait for the embedded broker to stop",
                                    ok=lambda v: v > 0, expected="> 0")

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"
