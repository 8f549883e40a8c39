"""The SparkSession every framestream Spark job uses: Kafka source jars, the venv's Python, loopback.

Under ``spark-submit`` the master and other flags given there win; run directly (tests, demo) the
session is ``local[2]`` by default. The Kafka connector jars come from ``make setup`` (Maven
Central), never from Ivy at run time. Executors import framestream's packages from the installed
project (``pip install -e .`` in set-up, or a wheel on every node), never from a PYTHONPATH.

Spark's driver logs at ``log_level`` (``FRAMESTREAM_SPARK_LOG_LEVEL``, default WARN; a job's
``--log-level``) from before the SparkContext starts, so its start-up INFO lines are not printed:
run directly, the JVM starts with ``etl/log4j2.properties``; under ``spark-submit`` (whose JVM is
already up) that profile is loaded into it unless the user gave log4j2 one of their own.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from framestream.paths import jars
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
        "WARN", "Spark's log4j level (a job's --log-level wins)",
        ok=lambda v: v.upper() in LOG4J_LEVELS or v.upper() in PYTHON_LEVELS,
        expected="a log4j level (ALL, TRACE, DEBUG, INFO, WARN, ERROR, FATAL, OFF) or "
                 "WARNING/CRITICAL")


LOG4J_LEVELS = ("ALL", "TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL", "OFF")
PYTHON_LEVELS = {"WARNING": "WARN", "CRITICAL": "FATAL"}  # Python's names for the same levels
LOG4J_PROFILE = Path(__file__).with_name("log4j2.properties")
LOG_LEVEL_PROPERTY = "framestream.spark.logLevel"  # read by LOG4J_PROFILE


def log4j_level(name: str) -> str:
    """The log4j level for a level name as log4j or Python's logging spell it."""
    level = PYTHON_LEVELS.get(name.upper(), name.upper())
    if level not in LOG4J_LEVELS:
        raise ValueError(f"log level {name!r}: expected one of {', '.join(LOG4J_LEVELS)} "
                         f"(or Python's WARNING, CRITICAL)")
    return level


def kafka_jars() -> list[str]:
    return [str(p) for p in jars("spark-kafka")]


def spark_session(settings: SparkSettings | None = None, *, log_level: str | None = None,
                  **conf: str) -> "SparkSession":
    """Get or create the session with the Kafka source on its classpath.

    ``log_level`` (a job's ``--log-level``) overrides ``settings.log_level`` for Spark's log4j.
    """
    s = settings or SparkSettings.load()
    level = log4j_level(log_level or s.log_level)
    # Spark's Python workers run the venv's interpreter, which has the project installed.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", s.bind_address)

    from pyspark import SparkConf, SparkContext
    from pyspark.sql import SparkSession

    from etl import py4j_fork

    py4j_fork.install()  # before the first connection: a fork (Ray's start-up) must not cut it
    if "PYSPARK_GATEWAY_PORT" in os.environ:
        # Under spark-submit: attach to its JVM first, or SparkConf() cannot see its flags.
        SparkContext._ensure_initialized()
    if SparkContext._jvm is not None:  # spark-submit's JVM, or a session made before
        _configure_log4j(SparkContext._jvm, level)
    else:  # the JVM starts with the builder's conf: our profile from its first line
        conf = {**conf, "spark.driver.extraJavaOptions": " ".join(filter(None, (
            f"-Dlog4j2.configurationFile={LOG4J_PROFILE}", f"-D{LOG_LEVEL_PROPERTY}={level}",
            conf.get("spark.driver.extraJavaOptions"))))}
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
                                     str(s.arrow_batch_rows))))
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(level)  # also when getOrCreate found a running session
    return spark


def _configure_log4j(jvm: Any, level: str) -> None:
    """Spark's driver JVM is up but its SparkContext is not: log at ``level`` from now on.

    With no log4j2 profile of the user's (spark-submit's JVM runs on Spark's INFO defaults from
    its jar, or on log4j's bare default), load ``etl/log4j2.properties`` into it; with one, only
    its root level is set.
    """
    jvm.java.lang.System.setProperty(LOG_LEVEL_PROPERTY, level)
    context = jvm.org.apache.logging.log4j.LogManager.getContext(False)
    where = context.getConfiguration().getConfigurationSource().getLocation()
    if where is None or "!/org/apache/spark/log4j2" in where:  # not the user's
        context.setConfigLocation(jvm.java.net.URI(LOG4J_PROFILE.as_uri()))  # reconfigures
        # Spark remembers that it loaded its defaults and loads them again (INFO) when the
        # SparkContext starts, unless told they are gone (pyspark 4.2.0's Logging object).
        spark_logging = getattr(getattr(jvm.org.apache.spark.internal, "Logging$"), "MODULE$")
        getattr(spark_logging, "org$apache$spark$internal$Logging$$defaultSparkLog4jConfig_$eq")(
            False)
    else:
        jvm.org.apache.logging.log4j.core.config.Configurator.setRootLevel(
            jvm.org.apache.logging.log4j.Level.toLevel(level))
