"""The stream driver: Spark session, the ranks (launched or attached), the query, clean shutdown.

Used by ``jobs/stream_classify.py`` (run under ``spark-submit``) and by the demo.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from etl.classify import warm_partition
from etl.client import ClientSettings
from etl.stream import ClassifyBatches, StreamSettings, kafka_sink_options, start_query
from framestream import web_uis
from framestream.config import KafkaSettings
from framestream.errors import FramestreamError
from framestream.topics import check_output_topics
from models.spec import PreprocessSpec

log = logging.getLogger(__name__)


@lru_cache(maxsize=32)
def spec_for(version: str, registry_root: str) -> PreprocessSpec:
    from models.spec import RANDOM_PREFIX

    if version.startswith(RANDOM_PREFIX):
        from models.nets import DEFAULT_SPECS

        return DEFAULT_SPECS[version[len(RANDOM_PREFIX):]]
    from models.registry import Registry

    return Registry(registry_root or None).manifest(version).preprocess_spec()


@dataclass
class StreamJob:
    stream: StreamSettings
    kafka: KafkaSettings
    client: ClientSettings
    ranks: int = 0                       # 0 = attach to published endpoints
    serve_args: list[str] = field(default_factory=list)
    available_now: bool = False
    ready_file: str = ""
    limits: dict[str, Any] = field(default_factory=dict)
    # (job, cancel) -> (launcher, gang): starts self.ranks serving ranks that publish to
    # stream.endpoints_file; launcher.release() stops them, gang.error / gang.restarts report
    start_ranks: Callable[["StreamJob", threading.Event], tuple[Any, Any]] | None = None
    spark_log_level: str | None = None   # the job's --log-level; else FRAMESTREAM_SPARK_LOG_LEVEL

    def run(self) -> int:
        from etl.decode import FrameLimits
        from etl.progress import ProgressLogger

        stopping = {"signal": None}
        cancel = threading.Event()  # a signal also ends a reservation still waiting for its gang

        def on_signal(signum: int, _frame: object) -> None:
            stopping["signal"] = signum
            cancel.set()
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

        limits = self.limits or FrameLimits.load().model_dump()
        sink_options = kafka_sink_options(self.kafka, max_frame_bytes=limits["max_bytes"])
        # before anything starts: a missing or too small output topic would fail every batch
        check_output_topics(self.kafka, int(sink_options["kafka.max.request.size"]))

        if self.ranks and self.start_ranks is None:
            raise FramestreamError(f"ranks={self.ranks} but no way to start them: pass "
                                   f"start_ranks (jobs.serving.start_serving_gang)")
        # Spark (context, then a warm-up job that starts every core's Python worker) and the
        # ranks (gang, mpirun, model load and its runtime's parity gate) start side by side;
        # the query starts when both are up. Spark goes to the thread (py4j calls are
        # thread-safe); Ray's client stays on the main thread.
        session = _Background(lambda: _warmed_spark(self.spark_log_level))
        gang = launcher = None
        try:
            if self.ranks:  # started by whoever composed this job (jobs/serving.py: Ray gang)
                launcher, gang = self.start_ranks(self, cancel)
        except BaseException:
            session.stop_when_done()
            raise
        try:
            spark = session.result()
        except BaseException:
            if launcher is not None:
                launcher.release()
            raise
        # the status page links to this driver's Spark UI (framestream/web_uis.py)
        ui_record = web_uis.announce(web_uis.SPARK_UI, spark.sparkContext.uiWebUrl or "",
                                     frames_topic=self.kafka.frames_topic)
        listener = ProgressLogger()
        spark.streams.addListener(listener)
        fn = ClassifyBatches(self.stream, self.kafka, self.client,
                             lambda v: spec_for(v, self.stream.registry), dict(limits),
                             sink_options)
        query = start_query(spark, fn, self.available_now)
        if self.ready_file:
            Path(self.ready_file).write_text(json.dumps({"query": str(query.id),
                                                         "started": time.time()}))
        code = 0
        try:
            while query.isActive:
                if query.awaitTermination(1):
                    break
                if stopping["signal"] is not None:
                    log.info("signal %s: stopping the query", stopping["signal"])
                    query.stop()
                    break
                if gang is not None and gang.error is not None:
                    log.error("stopping: %s", gang.error)
                    query.stop()
                    code = 3
                    break
            exc = query.exception()
            if exc is not None:
                log.error("query failed: %s", exc)
                code = 1
        finally:
            if launcher is not None:
                launcher.release()  # stops the ranks, then gives the gang back
            st = fn.stats
            print(json.dumps({"batches": st.batches, "frames": st.frames,
                              "predictions": st.predictions, "dead_letters": st.dead_letters,
                              "rank_restarts": gang.restarts if gang else 0,
                              "versions": sorted(set(st.versions.values()))}), flush=True)
            web_uis.withdraw(ui_record)
            fn.close()
            spark.stop()
        return code


class _Background:
    """``fn()`` on a thread of its own; :meth:`result` joins it and re-raises what it raised.

    The join has no timeout of its own: ``fn`` (Spark's session) is bounded by Spark's own
    start-up timeouts (``spark.driver`` connect and gateway timeouts)."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self._out: dict[str, Any] = {}

        def run() -> None:
            try:
                self._out["value"] = fn()
            except BaseException as exc:  # noqa: BLE001 -- handed to the caller by result()
                self._out["error"] = exc
        self._thread = threading.Thread(target=run, name="spark-session", daemon=True)
        self._thread.start()

    def result(self) -> Any:
        while self._thread.is_alive():
            self._thread.join(1.0)
        if "error" in self._out:
            raise self._out["error"]
        return self._out["value"]

    def stop_when_done(self) -> None:
        """After a failure elsewhere: wait for the session, then stop it."""
        try:
            self.result().stop()
        except BaseException:  # noqa: BLE001 -- it failed to start too: nothing to stop
            log.debug("spark session did not start", exc_info=True)


def _warmed_spark(log_level: str | None = None) -> Any:
    """Spark's session with every core's Python worker started (see :func:`warm_up`)."""
    from etl.session import spark_session

    spark = spark_session(log_level=log_level)
    try:
        warm_up(spark)
    except BaseException:
        spark.stop()
        raise
    return spark


def warm_up(spark: Any) -> None:
    """One small job on every core's Python worker before the query starts (see
    :func:`etl.classify.warm_partition`): the first micro-batch then does not pay for starting
    the workers, importing the ETL and Pillow's codecs. It needs no ranks, so it runs while
    they start; the first batch opens the (cheap) sockets."""
    started = time.monotonic()
    n = spark.sparkContext.defaultParallelism
    spark.range(n, numPartitions=n).mapInArrow(warm_partition, "rows long").collect()
    log.info("warmed %d Python workers in %.1fs", n, time.monotonic() - started)


def check_attach(stream: StreamSettings) -> None:
    from framestream import endpoints

    if endpoints.read(Path(stream.endpoints_file)) is None:
        raise FramestreamError(f"no ranks published at {stream.endpoints_file}: start them "
                               f"(mpirun -n N python -m mpi_workers.serve) or pass --ranks N")
