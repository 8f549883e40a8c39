"""Small Kafka admin helpers over kafka-python: is a broker there, make sure topics exist.

``bootstrap`` is a bootstrap string or :class:`KafkaSettings`; either way the client carries the
FRAMESTREAM_KAFKA_* security settings (:mod:`framestream.kafka_clients`)."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterable

from kafka import KafkaAdminClient
from kafka.errors import KafkaError, TopicAlreadyExistsError

from framestream import kafka_clients
from framestream.errors import DeadlineExceeded, ServiceError
from framestream.kafka_clients import KafkaLike

log = logging.getLogger(__name__)


def admin_client(bootstrap: KafkaLike, timeout: float = 30.0) -> KafkaAdminClient:
    """An admin client; ServiceError saying what to do when no broker answers at ``bootstrap``."""
    ms = int(timeout * 1000)
    kafka = kafka_clients.settings_of(bootstrap)
    try:
        return kafka_clients.admin(kafka, client_id="framestream-admin",
                                   request_timeout_ms=max(ms, 1000), bootstrap_timeout_ms=ms)
    except KafkaError as exc:
        raise ServiceError(f"no Kafka broker answers at {kafka.bootstrap} within {timeout:.0f}s "
                           f"({type(exc).__name__}): start the local one with `make up`, or "
                           f"point FRAMESTREAM_KAFKA_BOOTSTRAP at yours") from exc


def _port_open(hostport: str, timeout: float) -> bool:
    host, _, port = hostport.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except OSError:
        return False


def broker_answers(bootstrap: KafkaLike, timeout: float = 5.0) -> bool:
    """True if a broker at ``bootstrap`` answers a metadata request within ``timeout`` seconds
    (with this process's security settings: a broker that refuses them does not answer)."""
    servers = kafka_clients.settings_of(bootstrap).bootstrap
    # A plain TCP probe first: kafka-python leaks the socket of a refused connection attempt.
    if not any(_port_open(hp, timeout) for hp in servers.split(",")):
        return False
    try:
        with admin_client(bootstrap, timeout) as admin:
            admin.list_topics()
        return True
    except (KafkaError, OSError, ServiceError):
        return False


def default_topic_configs() -> dict[str, str]:
    """Configs of the topics framestream creates: records as large as the stream's sink writes
    (FRAMESTREAM_LIMITS_MAX_BYTES + 64 KiB, see framestream.topics)."""
    from framestream.limits import FrameLimits
    from framestream.config import KafkaSettings
    from framestream.topics import topic_configs

    return topic_configs(KafkaSettings.load().sink_request_bytes(FrameLimits.load().max_bytes))


def ensure_topics(bootstrap: KafkaLike, names: Iterable[str], partitions: int,
                  timeout: float = 30.0, configs: dict[str, str] | None = None) -> list[str]:
    """Create the topics that do not exist yet and wait until every partition has a leader.

    Returns the names that were created. Existing topics are left as they are (whatever their
    partition count: changing it would reshuffle keys). New ones get ``configs`` (default:
    :func:`default_topic_configs`) and the broker's ``default.replication.factor`` (1 on the
    embedded broker, 3 on ``python -m stack cluster``).
    """
    names = list(dict.fromkeys(names))
    configs = default_topic_configs() if configs is None else configs
    with admin_client(bootstrap, timeout) as admin:
        existing = set(admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            spec = {n: {"num_partitions": partitions, "replication_factor": -1, "configs": configs}
                    for n in missing}
            try:
                admin.create_topics(spec, timeout_ms=int(timeout * 1000))
            except TopicAlreadyExistsError:
                pass  # raced with another creator: fine, it exists now
            log.info("created topics %s (%d partitions)", missing, partitions)
        try:
            admin.wait_for_topics(names, timeout_ms=int(timeout * 1000))
        except KafkaError as exc:
            raise DeadlineExceeded("ensure_topics", f"leaders for topics {names} at "
                                   f"{kafka_clients.settings_of(bootstrap).bootstrap}",
                                   timeout, "FRAMESTREAM_KAFKA_REQUEST_TIMEOUT_S", str(exc)) from exc
    return missing


def delete_topics(bootstrap: KafkaLike, names: Iterable[str], timeout: float = 30.0) -> None:
    names = list(names)
    if not names:
        return
    with admin_client(bootstrap, timeout) as admin:
        admin.delete_topics(names, timeout_ms=int(timeout * 1000), raise_errors=False)


def describe(bootstrap: KafkaLike, timeout: float = 10.0) -> dict[str, int]:
    """Topic name -> partition count, for `make status`."""
    with admin_client(bootstrap, timeout) as admin:
        return {t["name"]: len(t.get("partitions") or [])
                for t in admin.describe_topics() if not t["name"].startswith("__")}
