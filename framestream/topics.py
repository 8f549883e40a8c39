"""What the stream needs of its output topics, checked before its query starts.

The sink writes records of up to ``request_bytes`` (:meth:`KafkaSettings.sink_request_bytes`:
FRAMESTREAM_LIMITS_MAX_BYTES + 64 KiB by default). A record the broker refuses, or a topic that
is not there, fails the micro-batch on every retry and every restart (the sink never skips a
record), so :func:`check_output_topics` refuses to start unless ``predictions`` and ``frames.dlq``

- exist (the broker must not create them on first write: auto-created topics get the broker's
  defaults, and framestream's embedded broker has ``auto.create.topics.enable=false``),
- have a leader for every partition (else nothing can be written),
- allow records of ``request_bytes`` (topic ``max.message.bytes``; the broker's
  ``message.max.bytes`` is the default for topics without their own value).

Each problem comes with the command that fixes it. This module is product code (the stream driver
runs it); ``framestream/kafka_admin.py`` (the producer, `make up`) creates topics with :func:`topic_configs`.
"""

from __future__ import annotations

import logging
from typing import Any

from framestream.config import KafkaSettings
from framestream.errors import ServiceError

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = "max.message.bytes"


class TopicsNotReady(ServiceError):
    """An output topic is missing, leaderless or too small for the records the sink writes."""

    exit_status = 2  # usage: the topics the settings name are not there as they must be


def topic_configs(request_bytes: int) -> dict[str, str]:
    """Topic configs under which every record of at most ``request_bytes`` is accepted."""
    return {MAX_MESSAGE_BYTES: str(request_bytes)}


def _admin(kafka: KafkaSettings, timeout_s: float) -> Any:
    from kafka.errors import KafkaError

    from framestream import kafka_clients

    ms = int(timeout_s * 1000)
    try:
        return kafka_clients.admin(kafka, client_id="framestream-check",
                                   request_timeout_ms=max(ms, 1000), bootstrap_timeout_ms=ms)
    except KafkaError as exc:
        raise ServiceError(f"no Kafka broker answers at {kafka.bootstrap} within {timeout_s:.0f}s "
                           f"({type(exc).__name__}): start it, or point "
                           f"FRAMESTREAM_KAFKA_BOOTSTRAP at yours") from exc


def _max_message_bytes(admin: Any, topics: list[str]) -> dict[str, int | None]:
    """Each topic's effective ``max.message.bytes`` (None where it could not be read)."""
    from kafka.admin import ConfigResource, ConfigResourceType

    resources = [ConfigResource(ConfigResourceType.TOPIC, t, configs=[MAX_MESSAGE_BYTES])
                 for t in topics]
    described = admin.describe_configs(resources, config_filter="all").get("topic", {})
    found: dict[str, int | None] = {}
    for t in topics:
        value = (described.get(t) or {}).get(MAX_MESSAGE_BYTES, {}).get("value")
        found[t] = int(value) if value is not None else None
        if value is None:
            log.warning("cannot read %s of topic %s (no DESCRIBE_CONFIGS?): not checked",
                        MAX_MESSAGE_BYTES, t)
    return found


def check_output_topics(kafka: KafkaSettings, request_bytes: int,
                        timeout_s: float | None = None) -> None:
    """Raise :class:`TopicsNotReady` (what is wrong, and the command that fixes it) unless the
    ``predictions`` and ``frames.dlq`` topics exist, have leaders, and accept ``request_bytes``."""
    timeout_s = timeout_s or kafka.request_timeout_s
    outputs = list(dict.fromkeys([kafka.predictions_topic, kafka.dlq_topic]))
    b = kafka.bootstrap
    problems: list[str] = []
    admin = _admin(kafka, timeout_s)
    try:
        existing = set(admin.list_topics())
        missing = [t for t in outputs if t not in existing]
        for t in missing:
            problems.append(
                f"topic {t!r} does not exist; create it: kafka-topics.sh --bootstrap-server {b} "
                f"--create --topic {t} --partitions {kafka.partitions} "
                f"--config {MAX_MESSAGE_BYTES}={request_bytes}  (or `make up` for the local stack;"
                f" or name another topic: FRAMESTREAM_KAFKA_"
                f"{'DLQ' if t == kafka.dlq_topic else 'PREDICTIONS'}_TOPIC)")
        present = [t for t in outputs if t in existing]
        if present:
            for meta in admin.describe_topics(present):
                name = meta.get("name")
                leaderless = [p.get("partition_index") for p in meta.get("partitions") or []
                              if p.get("leader_id", -1) < 0]
                allowed = meta.get("authorized_operations")  # None: the broker did not say
                if meta.get("error_code"):
                    problems.append(f"topic {name!r} cannot be described (Kafka error "
                                    f"{meta['error_code']}): grant this client DESCRIBE and WRITE "
                                    f"on it")
                elif allowed is not None and not {"WRITE", "ALL"} & set(allowed):
                    problems.append(f"this client may not write to topic {name!r} (it may "
                                    f"{sorted(allowed)}): grant it WRITE (kafka-acls.sh "
                                    f"--bootstrap-server {b} --add --allow-principal User:<the "
                                    f"stream's user> --operation Write --topic {name})")
                elif leaderless:
                    problems.append(f"topic {name!r} has no leader for partitions {leaderless}: "
                                    f"nothing can be written to them; bring their brokers back")
            for t, size in _max_message_bytes(admin, present).items():
                if size is not None and size < request_bytes:
                    problems.append(
                        f"topic {t!r} accepts records of at most {size} bytes "
                        f"({MAX_MESSAGE_BYTES}) but the sink writes up to {request_bytes} "
                        f"(FRAMESTREAM_KAFKA_MAX_REQUEST_BYTES; by default FRAMESTREAM_LIMITS_MAX_BYTES "
                        f"+ 64 KiB): raise it: kafka-configs.sh "
                        f"--bootstrap-server {b} --alter --entity-type topics --entity-name {t} "
                        f"--add-config {MAX_MESSAGE_BYTES}={request_bytes}  (or lower "
                        f"FRAMESTREAM_LIMITS_MAX_BYTES, or set FRAMESTREAM_KAFKA_MAX_REQUEST_BYTES"
                        f" <= {size} and accept that bigger dead letters are cut)")
    finally:
        admin.close()
    if problems:
        raise TopicsNotReady("the stream's output topics are not ready:\n  - "
                             + "\n  - ".join(problems))
    log.info("output topics %s ready for records up to %d bytes", outputs, request_bytes)
