"""The streaming query: Kafka ``frames`` -> executors (decode, ranks) -> ``predictions`` / DLQ.

Spark owns fault tolerance. Offsets live in the checkpoint; each micro-batch runs in
``foreachBatch``: the driver pins the model version for the batch id (a replay after a crash uses
the same one), reads the current endpoint set, and runs :func:`etl.classify.classify_partition` on
the executors with ``mapInArrow``; the rows go to Kafka with Spark's Kafka sink (one write, the
topic column routes each row). At-least-once: a replayed batch rewrites the same answers, so
consumers de-duplicate by (topic, partition, offset).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from etl.classify import BatchContext, classify_partition
from etl.client import ClientSettings
from etl.directory import EndpointDirectory, for_session
from etl.pins import VersionPins, is_uri
from etl.records import KAFKA_DEFAULT_REQUEST_BYTES, OUT_DDL
from framestream import endpoints as endpoints_mod
from framestream.config import KafkaSettings
from framestream.limits import FrameLimits
from framestream.paths import state_dir
from framestream.settings import Section, section, setting

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.streaming import StreamingQuery

log = logging.getLogger(__name__)


class StreamSettings(Section):
    """The streaming query: where it reads from, where it keeps its state, which ranks."""

    model_config = section("stream")

    checkpoint: str = setting(doc="checkpoint location (offsets, pinned model versions)",
                              factory=lambda: str(state_dir() / "checkpoints" / "stream"),
                              shown="<state>/checkpoints/stream")
    starting_offsets: str = setting("earliest", "where a new query starts: earliest, latest or "
                                                "Spark's JSON of offsets per partition")
    max_offsets_per_trigger: int = setting(20000, "frames per micro-batch at most (0 = no limit)",
                                           ok=lambda v: v >= 0, expected="0 (no limit) or more")
    trigger_s: float = setting(0.5, "seconds between micro-batches", ok=lambda v: v >= 0,
                               expected=">= 0")
    topk: int = setting(3, "classes (with scores) in each prediction",
                        ok=lambda v: 1 <= v <= 100, expected="1..100")
    endpoints_file: str = setting(doc="the ranks' endpoint file",
                                  factory=lambda: str(state_dir() / "endpoints.json"),
                                  shown="<state>/endpoints.json")
    registry: str = setting("", "model registry root (empty = FRAMESTREAM_REGISTRY_ROOT)")
    version: str = setting("", "serve this version, not the registry's promoted one")
    endpoints_timeout_s: float = setting(120.0, "seconds to wait for the ranks' endpoints",
                                         ok=lambda v: v > 0, expected="> 0")


@dataclass
class BatchStats:
    batches: int = 0
    frames: int = 0
    predictions: int = 0
    dead_letters: int = 0
    versions: dict[int, str] = field(default_factory=dict)


class ClassifyBatches:
    """The foreachBatch function, run on the driver for every micro-batch."""

    def __init__(self, settings: StreamSettings, kafka: KafkaSettings, client: ClientSettings,
                 spec_of: Any, limits: dict[str, Any], kafka_options: dict[str, str]) -> None:
        self.s = settings
        self.kafka = kafka
        self.client = client
        self.spec_of = spec_of            # version -> PreprocessSpec
        self.limits = limits
        self.kafka_options = kafka_options
        # every dead letter is cut to fit what the sink's producer accepts
        self.max_record_bytes = int(kafka_options.get("kafka.max.request.size",
                                                      KAFKA_DEFAULT_REQUEST_BYTES))
        # a URI checkpoint's pins go through the JVM's Hadoop FileSystem: made at the first batch
        self.pins: VersionPins | None = (None if is_uri(settings.checkpoint) else
                                         VersionPins.beside(settings.checkpoint))
        self.stats = BatchStats()
        self._last_good = ""                       # last serving version that passed its checksum
        self._said: tuple[Any, ...] = ()           # the last fallback logged
        self._checked: dict[Any, Exception | None] = {}  # (version, size, mtime) -> refusal
        self.directory: EndpointDirectory | None = None  # made at the first batch

    def close(self) -> None:
        """Stop the endpoint directory (after the query stopped)."""
        if self.directory is not None:
            self.directory.close()
            self.directory = None

    def choose_version(self) -> str:
        """The version a new micro-batch runs with: the registry's serving one if its weights pass
        their checksum, else the last good one, else the newest that verifies (the same choice a
        starting rank makes, :func:`models.fallback.choose_serving`): a bad promotion or a broken
        ``serving.json`` never reaches the ranks and never fails the batch."""
        if self.s.version:
            return self.s.version
        from models.errors import RegistryError
        from models.fallback import choose_serving
        from models.registry import Registry

        registry = Registry(self.s.registry or None)
        try:
            choice = choose_serving(registry, lambda v: self._verified(registry, v),
                                    prefer=self._last_good)
        except RegistryError as exc:
            published = endpoints_mod.read(Path(self.s.endpoints_file))
            if published is None or not published.model_version:
                raise
            log.error("%s; staying on the ranks' version %s", exc, published.model_version)
            return published.model_version
        said = (choice.named, choice.reason, choice.version)
        if choice.fell_back and said != self._said:  # once per state, not once per micro-batch
            log.error("refusing to serve %s (%s): %s; staying on %s%s", choice.named or
                      "serving.json's version", choice.reason, choice.detail, choice.version,
                      "" if choice.promoted else " (never promoted)")
        self._said = said
        self._last_good = choice.version
        return choice.version

    def _verified(self, registry: Any, version: str) -> None:
        """Checksum of ``version``'s weights, checked once per (version, file size, mtime);
        raises what refused it."""
        try:
            weights = registry.weights_path(version)
            st = weights.stat()
        except Exception as exc:  # unknown or broken version, missing file: not servable
            key: Any = (version, type(exc).__name__)
        else:
            key = (version, st.st_size, st.st_mtime_ns)
        if key not in self._checked:
            try:
                registry.verify(version)
                self._checked[key] = None
            except Exception as exc:  # ChecksumMismatch, VersionNotFound, BadVersion, OSError
                self._checked[key] = exc
        refusal = self._checked[key]
        if refusal is not None:
            raise refusal.with_traceback(None)  # one stored error, no traceback piling up

    def __call__(self, df: "DataFrame", batch_id: int) -> None:
        started = time.monotonic()
        if self.pins is None:
            self.pins = VersionPins.beside(self.s.checkpoint, df.sparkSession)
        version = self.pins.pin(batch_id, self.choose_version)
        current = endpoints_mod.wait_for(Path(self.s.endpoints_file), self.s.endpoints_timeout_s,
                                         setting="FRAMESTREAM_STREAM_ENDPOINTS_TIMEOUT_S")
        if self.directory is None:  # where executors on any host ask for a newer generation
            self.directory = for_session(df.sparkSession, self.s.endpoints_file)
        ctx = BatchContext(batch_id, version, self.spec_of(version).to_dict(), current.to_json(),
                           self.directory.ref, self.kafka.predictions_topic, self.kafka.dlq_topic,
                           self.s.topk, self.limits, self.client.model_dump(),
                           self.max_record_bytes)
        sc = df.sparkSession.sparkContext
        counts = (sc.accumulator(0), sc.accumulator(0))  # for the log; a retried task adds twice
        out = df.mapInArrow(partial(classify_partition, ctx=ctx, counts=counts), OUT_DDL)
        writer = out.select("topic", "key", "value", "headers").write.format("kafka")
        for key, value in self.kafka_options.items():
            writer = writer.option(key, value)
        writer.save()
        n_pred, n_dlq = counts[0].value, counts[1].value
        st = self.stats
        st.batches, st.frames = st.batches + 1, st.frames + n_pred + n_dlq
        st.predictions, st.dead_letters = st.predictions + n_pred, st.dead_letters + n_dlq
        st.versions[batch_id] = version
        log.info("batch %d: %d predictions, %d dead letters, model %s, ranks gen %d, %.2fs",
                 batch_id, n_pred, n_dlq, version, current.generation, time.monotonic() - started)


def kafka_sink_options(kafka: KafkaSettings, extra: dict[str, str] | None = None,
                       max_frame_bytes: int | None = None) -> dict[str, str]:
    """Spark's Kafka sink: bootstrap and security (FRAMESTREAM_KAFKA_SECURITY_* ...), acks=all,
    idempotent. No compression: every Kafka client can read the predictions (kafka-python has
    no lz4). ``max.request.size`` is :meth:`KafkaSettings.sink_request_bytes` of the largest
    legal frame (``max_frame_bytes``, default FRAMESTREAM_LIMITS_MAX_BYTES), so a legal frame's
    prediction or dead letter is never refused by the client (Kafka's default is 1 MiB)."""
    if max_frame_bytes is None:
        max_frame_bytes = FrameLimits.load().max_bytes
    request = kafka.sink_request_bytes(max_frame_bytes)
    opts = {**kafka.spark_options(), "kafka.acks": "all", "kafka.enable.idempotence": "true",
            "kafka.linger.ms": "5", "kafka.max.request.size": str(request),
            # the producer refuses a record larger than its buffer too (default 32 MiB)
            "kafka.buffer.memory": str(max(32 * 1024 * 1024, 2 * request))}
    opts.update(extra or {})
    return opts


def start_query(spark: "SparkSession", fn: ClassifyBatches, available_now: bool = False,
                source_options: dict[str, str] | None = None) -> "StreamingQuery":
    """Start the query reading ``frames`` with Spark's Kafka source."""
    s, kafka = fn.s, fn.kafka
    reader = (spark.readStream.format("kafka")
              .options(**kafka.spark_options())  # bootstrap servers + security
              .option("subscribe", kafka.frames_topic)
              .option("startingOffsets", s.starting_offsets)
              .option("includeHeaders", "true"))
    if s.max_offsets_per_trigger:
        reader = reader.option("maxOffsetsPerTrigger", str(s.max_offsets_per_trigger))
    for key, value in (source_options or {}).items():
        reader = reader.option(key, value)
    writer = (reader.load().writeStream.queryName("framestream")
              .foreachBatch(fn).option("checkpointLocation", s.checkpoint))
    writer = writer.trigger(availableNow=True) if available_now else \
        writer.trigger(processingTime=f"{int(s.trigger_s * 1000)} milliseconds")
    return writer.start()
