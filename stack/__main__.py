"""``python -m stack {up,down,status,doctor}``: the embedded local stack.

up      start the Kafka broker under $FRAMESTREAM_STATE/kafka (default .state/kafka) and create the
        topics frames, predictions, frames.dlq, labels (FRAMESTREAM_KAFKA_PARTITIONS, default 4)
down    stop it
status  is it running, which topics
doctor  run a small real job on every engine (torch, ZeroMQ, Kafka, Spark, MPI, Ray)
cluster up|down|status
        a 3-broker KRaft cluster with SASL_SSL (SCRAM-SHA-512) on network-namespace hosts under
        $FRAMESTREAM_STATE/kafka-cluster (needs root); `up` prints the FRAMESTREAM_KAFKA_*
        settings its clients need (see stack/kafka_cluster.py)
"""

from __future__ import annotations

import argparse
import logging
import sys

from framestream.config import BrokerSettings, KafkaSettings
from framestream.exits import entry_point
from framestream.flags import add_settings, from_args
from framestream.paths import state_dir
from stack.kafka_broker import KafkaBroker


def embedded_broker() -> KafkaBroker:
    return KafkaBroker(state_dir() / "kafka", BrokerSettings.load())


def up(partitions: int | None) -> int:
    from framestream.kafka_admin import ensure_topics

    kafka = KafkaSettings.load(partitions=partitions)
    broker = embedded_broker()
    broker.start()
    created = ensure_topics(broker.kafka, kafka.topics(), kafka.partitions)
    print(f"Kafka broker up at {broker.bootstrap} (pid {broker.pid()}, log {broker.logfile}); "
          f"topics {', '.join(kafka.topics())}" + (f" (created {created})" if created else ""))
    return 0


def down() -> int:
    broker = embedded_broker()
    print("Kafka broker stopped" if broker.stop() else "no Kafka broker was running")
    return 0


def status() -> int:
    from framestream.kafka_admin import describe

    broker = embedded_broker()
    if not broker.running():
        print(f"Kafka broker: not running (state in {broker.home}); `make up` starts it")
        return 3
    topics = describe(broker.kafka)
    print(f"Kafka broker: running, pid {broker.pid()}, {broker.bootstrap}, log {broker.logfile}")
    for name, parts in sorted(topics.items()):
        print(f"  topic {name}: {parts} partitions")
    return 0


def doctor() -> int:
    from stack.doctor import run_checks

    print("Checking every engine with a small real job:")
    ok = run_checks()
    print("all engines healthy" if ok else "some engines failed: see above")
    return 0 if ok else 1


def cluster(action: str) -> int:
    from framestream.kafka_admin import ensure_topics
    from stack.kafka_cluster import KafkaCluster

    kc = KafkaCluster(state_dir() / "kafka-cluster")
    if action == "up":
        kc.up()
        kafka = kc.settings(partitions=KafkaSettings.load().partitions)
        ensure_topics(kafka, kafka.topics(), kafka.partitions)
        print(f"Kafka cluster up: 3 brokers (SASL_SSL, {kafka.sasl_mechanism}) at "
              f"{kc.bootstrap}; topics {', '.join(kafka.topics())} (replication 3, min ISR 2); "
              f"state in {kc.home}. Clients use:")
        for key, value in kc.env().items():
            print(f"export {key}={value}")
        return 0
    if action == "down":
        kc.down()
        print(f"Kafka cluster stopped (data kept in {kc.home})")
        return 0
    pids = kc.status()
    for k, pid in pids.items():
        print(f"  broker {k} at {kc.ip(k)}: " + (f"running, pid {pid}" if pid else "not running"))
    return 0 if all(pids.values()) else 3


def spark(action: str) -> int:
    from stack.spark_cluster import SparkCluster

    sc = SparkCluster(state_dir() / "spark-cluster")
    if action == "up":
        sc.up()
        print(f"Spark standalone cluster up: master {sc.master_url} (UI {sc.ui_url}), "
              f"workers {', '.join(sc.worker_ips)}; state in {sc.home}. A driver on this "
              f"machine binds the bridge's address:")
        print(f"export FRAMESTREAM_SPARK_BIND_ADDRESS={sc.driver_ip}")
        print(f"spark-submit --master {sc.master_url} jobs/stream_classify.py ...")
        return 0
    if action == "down":
        sc.down()
        print(f"Spark cluster stopped (logs kept in {sc.home})")
        return 0
    pids = sc.status()
    try:
        alive = sc.alive_workers()
    except (OSError, ValueError):
        alive = []
    for role, pid in pids.items():
        print(f"  {role} at {sc.ip(role)}: " + (f"running, pid {pid}" if pid else "not running"))
    print(f"  master {sc.master_url} lists {len(alive)} ALIVE worker(s): {', '.join(alive)}")
    return 0 if all(pids.values()) and len(alive) == sc.workers else 3


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stack", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_up = sub.add_parser("up", help="start the broker and create the topics")
    add_settings(p_up, KafkaSettings, "partitions")
    sub.add_parser("down", help="stop the broker")
    sub.add_parser("status", help="show broker and topics")
    sub.add_parser("doctor", help="check every engine")
    p_cluster = sub.add_parser("cluster", help="a 3-broker SASL_SSL Kafka cluster on "
                                               "namespace hosts")
    p_cluster.add_argument("action", choices=("up", "down", "status"))
    p_spark = sub.add_parser("spark", help="a Spark standalone master + 2 workers on namespace "
                                           "hosts")
    p_spark.add_argument("action", choices=("up", "down", "status"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.cmd == "up":
        return up(from_args(args, KafkaSettings).partitions)
    if args.cmd == "cluster":
        return cluster(args.action)
    if args.cmd == "spark":
        return spark(args.action)
    return {"down": down, "status": status, "doctor": doctor}[args.cmd]()


if __name__ == "__main__":
    sys.exit(main())
