"""The SparkSession every framestream Spark job uses: Kafka source jars, the venv's Python, loopback.

Under ``spark-submit`` the master and other flags given there win; run directly (tests, demo) the
session is ``local[2]`` by default. The Kafka connector jars come from ``make setup`` (Maven
Central), never from Ivy at run time.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from framestream.paths import REPO, jars
from framestream.settings import Section, section, setting

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


class SparkSettings(Section):
    """The Spark session of the stream and retrain jobs (spark-submit's own flags win)."""

    model_config = section("spark")

    master: str = setting("local[2,4]", "Spark master when not given by spark-submit "
                                        "(local[2,4]: 2 cores, a task may fail 4 times)")
    app_name: str = setting("framestream", "Spark application name")
    shuffle_partitions: int = setting(4, "spark.sql.shuffle.partitions",
                                      ok=lambda v: v >= 1, expected=">= 1")
    driver_memory: str = setting("1g", "spark.driver.memory")
    ui: bool = setting(True, "start the Spark UI")
    bind_address: str = setting("127.0.0.1", "address the driver binds (spark.driver.bindAddress)")
    # Rows per Arrow batch handed to the executors' Python: small enough that Kafka reads, decode
    # and the sink overlap (etl/classify.py pipelines batches), large enough to amortise the hop.
    arrow_batch_rows: int = setting(1024, "rows per Arrow batch handed to the executors' Python",
                                    ok=lambda v: v >= 1, expected=">= 1")
    log_level: str = setting(
        "WARN", "Spark's log4j level",
        ok=lambda v: v in ("ALL", "DEBUG", "INFO", "WARN", "ERROR", "FATAL", "OFF"),
        expected="a log4j level")


def kafka_jars() -> list[str]:
    return [str(p) for p in jars("spark-kafka")]


def spark_session(settings: SparkSettings | None = None, **conf: str) -> "SparkSession":
    """Get or create the session with the Kafka source on its classpath."""
    s = settings or SparkSettings.load()
    # Spark's Python workers must run the venv's interpreter and see the project's packages.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", s.bind_address)
    pythonpath = os.environ.get("PYTHONPATH", "")
    if str(REPO) not in pythonpath.split(os.pathsep):
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), pythonpath) if p)

    from pyspark import SparkConf, SparkContext
    from pyspark.sql import SparkSession

    if "PYSPARK_GATEWAY_PORT" in os.environ:
        # Under spark-submit: attach to its JVM first, or SparkConf() cannot see its flags.
        SparkContext._ensure_initialized()
    submitted = SparkConf()  # spark-submit's flags (--master, --conf, defaults file)
    builder = SparkSession.builder.appName(s.app_name)
    # spark-submit says local[*] when no --master was given: the project's default is kept then.
    if submitted.get("spark.master", "local[*]") == "local[*]" or "FRAMESTREAM_SPARK_MASTER" in \
            os.environ:
        builder = builder.master(s.master)
        builder = builder.config("spark.driver.memory", s.driver_memory)
    existing = [j for j in submitted.get("spark.jars", "").split(",") if j]
    missing = [j for j in kafka_jars() if j not in existing]  # setup puts them in the defaults
    builder = (builder
               .config("spark.jars", ",".join(existing + missing))
               .config("spark.sql.shuffle.partitions", str(s.shuffle_partitions))
               .config("spark.ui.enabled", str(s.ui).lower())
               .config("spark.ui.showConsoleProgress", "false")
               .config("spark.driver.bindAddress", s.bind_address)
               .config("spark.driver.host", s.bind_address)
               .config("spark.sql.execution.arrow.pyspark.enabled", "true")
               .config("spark.sql.execution.arrow.maxRecordsPerBatch",  # spark-submit's wins
                       submitted.get("spark.sql.execution.arrow.maxRecordsPerBatch",
                                     str(s.arrow_batch_rows)))
               .config("spark.executorEnv.PYTHONPATH", os.environ["PYTHONPATH"]))
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(s.log_level)
    return spark
