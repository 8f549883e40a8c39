"""Can framestream's query run in Spark's real-time mode (``trigger(realTime=...)``, pyspark 4.2)?

    python -m bench.realtime_mode          # needs the broker (make up); prints one JSON line

Starts three small queries on a fresh topic, each with ``trigger(realTime="5 seconds")``, and
reports for each whether Spark refuses it, it fails, or it runs for ``--seconds``:

- ``foreachBatch``: framestream's sink (the micro-batch function that pins a model version per
  batch, calls the ranks and writes predictions and dead letters);
- ``mapInArrow -> kafka``: the stream's work as an Arrow map (executors call the ranks) feeding
  Spark's Kafka sink, with and without Spark's operator allowlist check;
- ``projection -> kafka``: what real-time mode is built for, as the control.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

from bench.common import setup_logging


def _identity(batches: Iterator[Any]) -> Iterator[Any]:
    yield from batches


def probe(spark: Any, bootstrap: str, topic_in: str, topic_out: str, seconds: float) -> dict:
    src = (spark.readStream.format("kafka").option("kafka.bootstrap.servers", bootstrap)
           .option("subscribe", topic_in).option("startingOffsets", "earliest").load())

    def to_kafka(df: Any) -> Any:
        return (df.writeStream.format("kafka").option("kafka.bootstrap.servers", bootstrap)
                .option("topic", topic_out).outputMode("update"))
    cases = {
        "foreachBatch": lambda: src.writeStream.foreachBatch(lambda df, i: None)
        .outputMode("update"),
        "mapInArrow -> kafka": lambda: to_kafka(src.select("key", "value").mapInArrow(
            _identity, "key binary, value binary")),
        "mapInArrow -> kafka, allowlist check off": lambda: to_kafka(src.select(
            "key", "value").mapInArrow(_identity, "key binary, value binary")),
        "projection -> kafka": lambda: to_kafka(src.select("key", "value")),
    }
    out = {}
    for name, make in cases.items():
        spark.conf.set("spark.sql.streaming.realTimeMode.allowlistCheck",
                       "false" if "check off" in name else "true")
        try:
            query = (make().option("checkpointLocation", f"/tmp/rtm-{uuid.uuid4().hex[:8]}")
                     .trigger(realTime="5 seconds").start())
        except Exception as exc:  # noqa: BLE001 -- the refusal is the finding
            out[name] = {"outcome": "refused", "why": str(exc).splitlines()[0][:400]}
            continue
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and query.isActive and query.exception() is None:
            try:
                query.awaitTermination(1)
            except Exception:  # noqa: BLE001 -- the query failed: query.exception() says why
                break
        exc = query.exception()
        out[name] = ({"outcome": "ran", "seconds": seconds} if exc is None else
                     {"outcome": "failed", "why": str(exc).splitlines()[0][:400]})
        query.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.realtime_mode", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=12.0, help="how long a started query runs")
    a = p.parse_args(argv)
    setup_logging()
    import pyspark

    from etl.session import SparkSettings, spark_session
    from framestream.config import KafkaSettings
    from framestream.kafka_admin import delete_topics, ensure_topics

    bootstrap = KafkaSettings.load().bootstrap
    topics = [f"rtm-in-{uuid.uuid4().hex[:6]}", f"rtm-out-{uuid.uuid4().hex[:6]}"]
    ensure_topics(bootstrap, topics, 2)
    spark = spark_session(SparkSettings.load(ui=False, app_name="realtime-mode-probe"))
    try:
        cases = probe(spark, bootstrap, topics[0], topics[1], a.seconds)
    finally:
        spark.stop()
        delete_topics(bootstrap, topics)
    print(json.dumps({"pyspark": pyspark.__version__, "trigger": "realTime='5 seconds'",
                      "cases": cases}, indent=1), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
