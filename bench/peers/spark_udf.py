"""Spark's own way: Structured Streaming from the topic with ``pyspark.ml.functions.predict_batch_udf``
running the torch model in Spark's Python workers, predictions to Kafka with Spark's Kafka sink.

    python -m bench.peers.spark_udf --set fashion --topic-in T --topic-out P --batch 256 --threads 1

Same session settings as framestream's stream (``etl.session``: local[2], the Kafka source jars,
the venv's Python), same trigger interval; the predict function decodes with ``etl.decode`` and
runs the registry version (``--version``) with ``--threads`` torch threads per Python worker.
Its own knobs, swept by the fair bench: ``--batch`` (predict_batch_udf's batch size),
``--arrow-batch`` (``spark.sql.execution.arrow.maxRecordsPerBatch``), ``--min-partitions`` and
``--max-offsets`` (the Kafka source's ``minPartitions`` and ``maxOffsetsPerTrigger``).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from bench.peers.common import parser, stop_on_sigterm, touch


def make_predict_fn(set_name: str, batch: int, threads: int, version: str | None = None,
                    registry: str | None = None, runtime: str = "eager") -> Any:
    def make() -> Any:
        import os

        import numpy as np

        from bench.frameset import model as load_model
        from etl.decode import decode_batch
        from mpi_workers.server_loop import forward

        model = load_model(set_name, threads=threads, version=version, registry=registry,
                           runtime=runtime)
        worker = f"pid-{os.getpid()}"

        def predict(values: np.ndarray) -> dict[str, np.ndarray]:
            decoded = decode_batch(list(values), model.spec)
            n = len(values)
            index = np.full(n, -1, np.int32)
            score = np.zeros(n, np.float32)
            if len(decoded.ok_index):
                probs = forward(model, decoded.images, batch)
                index[decoded.ok_index] = probs.argmax(1)
                score[decoded.ok_index] = probs.max(1)
            return {"class_index": index, "score": score,
                    "prediction_ts": np.full(n, time.time(), np.float64),
                    "worker": np.full(n, worker, object)}
        return predict
    return make


def main(argv: list[str] | None = None) -> int:
    p = parser("python -m bench.peers.spark_udf", __doc__ or "")
    p.add_argument("--trigger-interval", type=float, default=0.5)
    p.add_argument("--checkpoint", default="")
    p.add_argument("--arrow-batch", type=int, default=10000,
                   help="spark.sql.execution.arrow.maxRecordsPerBatch")
    p.add_argument("--min-partitions", type=int, default=0, help="Kafka source minPartitions")
    p.add_argument("--max-offsets", type=int, default=0, help="Kafka source maxOffsetsPerTrigger")
    a = p.parse_args(argv)
    stopping = stop_on_sigterm()
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql import functions as F
    from pyspark.sql.types import (DoubleType, FloatType, IntegerType, StringType, StructField,
                                   StructType)

    from etl.session import SparkSettings, spark_session
    from etl.stream import kafka_sink_options
    from framestream.config import KafkaSettings

    spark = spark_session(SparkSettings.load(ui=False, app_name="bench-predict-batch-udf",
                                             master=f"local[{a.workers},4]"))
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(a.arrow_batch))
    predict = predict_batch_udf(make_predict_fn(a.set, a.batch, a.threads, a.version, a.registry,
                                                a.runtime),
                                return_type=StructType([StructField("class_index", IntegerType()),
                                                        StructField("score", FloatType()),
                                                        StructField("prediction_ts", DoubleType()),
                                                        StructField("worker", StringType())]),
                                batch_size=a.batch)

    def header(name: str) -> Any:
        return F.expr(f"cast(filter(headers, h -> h.key = '{name}')[0].value as string)")

    source = (spark.readStream.format("kafka").option("kafka.bootstrap.servers", a.bootstrap)
              .option("subscribe", a.topic_in).option("startingOffsets", "earliest")
              .option("includeHeaders", "true"))
    if a.min_partitions:
        source = source.option("minPartitions", str(a.min_partitions))
    if a.max_offsets:
        source = source.option("maxOffsetsPerTrigger", str(a.max_offsets))
    frames = source.load()
    scored = frames.select("topic", "partition", "offset", "key", "timestamp",
                           header("fs-frame-id").alias("frame_id"),
                           header("fs-label").cast("int").alias("label"),
                           header("fs-capture-ts").cast("double").alias("capture_ts"),
                           predict(F.col("value")).alias("p"))
    value = F.to_json(F.struct(
        "topic", "partition", "offset", F.col("key").cast("string").alias("key"), "frame_id",
        "label", F.col("p.class_index").alias("class_index"),
        F.array(F.struct(F.col("p.class_index").alias("index"), F.col("p.score").alias("score")))
        .alias("topk"), F.col("timestamp").cast("double").alias("ingest_ts"), "capture_ts",
        F.col("p.prediction_ts").alias("prediction_ts"), F.col("p.worker").alias("worker")))
    writer = scored.select("key", value.alias("value")).writeStream.format("kafka")
    for key, val in kafka_sink_options(KafkaSettings.load(bootstrap=a.bootstrap)).items():
        writer = writer.option(key, val)
    checkpoint = a.checkpoint or str(Path(a.ready_file or ".").parent / f"checkpoint-{a.topic_in}")
    query = (writer.option("topic", a.topic_out).option("checkpointLocation", checkpoint)
             .trigger(processingTime=f"{int(a.trigger_interval * 1000)} milliseconds").start())
    touch(a.ready_file)
    while query.isActive and not stopping():
        query.awaitTermination(0.5)
    failed = query.exception() is not None if not query.isActive else False
    if query.isActive:
        query.stop()
    spark.stop()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
