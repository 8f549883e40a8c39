"""The one place framestream makes kafka-python clients: every one carries the security settings.

A client made anywhere else would connect without FRAMESTREAM_KAFKA_SECURITY_PROTOCOL, SASL and
TLS, and fail only on a secured cluster (tests/unit/test_kafka_client_sites.py fails the build
when product code constructs ``KafkaProducer``/``KafkaConsumer``/``KafkaAdminClient`` outside this
module, or reads/writes Spark's Kafka source/sink without :meth:`KafkaSettings.spark_options`).

Each function takes either :class:`KafkaSettings` or a bootstrap string; a string is completed
with the FRAMESTREAM_KAFKA_* settings of this process (security included), so callers that only
carry a bootstrap (``results.read_topic(bootstrap, ...)``) still reach a secured cluster.
"""

from __future__ import annotations

from typing import Any

from framestream.config import KafkaSettings

KafkaLike = KafkaSettings | str


def settings_of(kafka: KafkaLike) -> KafkaSettings:
    """``kafka`` itself, or the process's KafkaSettings with ``bootstrap`` = the given string."""
    return kafka if isinstance(kafka, KafkaSettings) else KafkaSettings.load(bootstrap=kafka)


def _options(kafka: KafkaLike, kwargs: dict[str, Any]) -> dict[str, Any]:
    k = settings_of(kafka)
    security = k.security_options()
    clash = sorted(set(security) & set(kwargs))
    if clash:  # security comes from the settings only, never from a call site
        raise TypeError(f"security options {clash} come from FRAMESTREAM_KAFKA_*, not a caller")
    return {"bootstrap_servers": k.bootstrap, **kwargs, **security}


def producer(kafka: KafkaLike, **kwargs: Any) -> Any:
    """A KafkaProducer with acks=all (unless the caller says otherwise) and the security options."""
    from kafka import KafkaProducer

    kwargs.setdefault("acks", "all")
    return KafkaProducer(**_options(kafka, kwargs))


def consumer(kafka: KafkaLike, *topics: str, **kwargs: Any) -> Any:
    """A KafkaConsumer with the security options."""
    from kafka import KafkaConsumer

    return KafkaConsumer(*topics, **_options(kafka, kwargs))


def admin(kafka: KafkaLike, **kwargs: Any) -> Any:
    """A KafkaAdminClient with the security options."""
    from kafka import KafkaAdminClient

    return KafkaAdminClient(**_options(kafka, kwargs))
