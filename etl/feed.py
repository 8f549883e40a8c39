"""LINE's training path, Spark side: labeled frames from Kafka -> the same ETL -> training ranks.

A batch query over a fixed offset range of the ``labels`` topic; executors decode and resize each
frame with :mod:`etl.decode` (exactly as the stream does for inference), take the true label from
the ``fs-label`` header, and send ``TRAIN`` batches over ZeroMQ to the training ranks with the
same client, and so the same dispatcher (:mod:`framestream.dispatch`: credits, re-sends,
generations), as the stream; TRAIN requests are re-sent but never cancelled. Frames that do not decode, or whose label is
missing, not an integer, negative or not below the number of classes, are counted as rejected,
not sent. When every partition is done the driver sends ``END`` to each rank, with the control
token the launching job (``jobs/retrain_kafka.py``) gave the ranks when it started mpirun (executors never get it, so no executor or
stranger can end a feed early).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from etl.client import ClientSettings, cached_client
from etl.directory import DirectoryRef
from framestream.endpoints import EndpointSet
from framestream.wire import Message, Op, decode, encode

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)
COUNTS_DDL = "fed long, rejected long"


@dataclass(frozen=True)
class FeedContext:
    spec: dict[str, Any]
    endpoints_json: str
    directory: DirectoryRef | None  # the driver's endpoint directory (etl/directory.py)
    limits: dict[str, Any]
    client: dict[str, Any]


def feed_partition(batches: Iterator[pa.RecordBatch], ctx: FeedContext
                   ) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: decode, label, send; yields one (fed, rejected) row per Arrow batch."""
    from etl.decode import FrameLimits, decode_batch
    from framestream.frames import LABEL_HEADER, header_numbers
    from models.spec import PreprocessSpec

    spec = PreprocessSpec.from_dict(ctx.spec)
    limits = FrameLimits(**ctx.limits)
    client = cached_client(ctx.endpoints_json, ctx.directory, ClientSettings(**ctx.client))
    chunk = client.settings.chunk_frames
    classes = len(spec.class_names)  # 0: the spec does not say, any label >= 0 goes
    for batch in batches:
        # -1 where missing, not a number or outside int64 (fs-label: 99999999999999999999)
        labels = header_numbers(batch.column("headers"), LABEL_HEADER, np.int64)
        fed = rejected = 0
        for start in range(0, batch.num_rows, chunk):
            decoded = decode_batch(batch.column("value").slice(start, chunk), spec, limits)
            y = labels[start:start + chunk][decoded.ok_index]
            # a frame without a usable true label cannot train anything; one outside
            # 0..classes-1 would make the rank refuse its whole chunk, on every retry
            keep = (y >= 0) & (y < classes) if classes else y >= 0
            if keep.any():
                client.submit(start, decoded.images[keep], None, labels=y[keep])
            fed += int(keep.sum())
            rejected += len(decoded.bad_index) + int((~keep).sum())
        client.gather()
        yield pa.record_batch([pa.array([fed], pa.int64()), pa.array([rejected], pa.int64())],
                              names=["fed", "rejected"])


def end_feed(endpoints: EndpointSet, timeout_s: float = 30.0,
             client: ClientSettings | None = None, control_token: str = "") -> list[int]:
    """Tell every training rank that no more data comes; returns the frames each one holds.

    ``control_token``: the token the ranks were started with (``FRAMESTREAM_CONTROL_TOKEN`` in
    their environment); without it they refuse END. Raises RuntimeError when a rank refuses."""
    import zmq

    from framestream.security import secure_client

    keys = (client or ClientSettings.load()).keys()
    ctx = zmq.Context()
    held = []
    try:
        for rank in endpoints.ranks:
            sock = ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            secure_client(sock, keys)
            sock.connect(rank.endpoint)
            sock.send_multipart(encode(Message(Op.END, f"end-{rank.rank}",
                                               meta={"token": control_token})))
            if not sock.poll(int(timeout_s * 1000)):
                raise TimeoutError(f"training rank {rank.rank} at {rank.endpoint} did not "
                                   f"acknowledge END within {timeout_s:.0f}s")
            reply = decode(sock.recv_multipart())
            if reply.op is not Op.ACK:
                raise RuntimeError(f"training rank {rank.rank} refused END: "
                                   f"{reply.meta.get('code')}: {reply.meta.get('detail')}")
            held.append(int(reply.meta.get("frames", 0)))
            sock.close(0)
    finally:
        ctx.destroy(linger=0)  # closes a socket left open by a timeout (term() would wait on it)
    return held


def feed(spark: "SparkSession", bootstrap: str, topic: str, offsets: dict[str, str],
         endpoints: EndpointSet, endpoints_file: str, spec: dict[str, Any],
         client: ClientSettings, limits: dict[str, Any], control_token: str = "") -> dict[str, int]:
    """Run the feeding job over ``offsets`` (Spark's startingOffsets/endingOffsets JSON);
    ``control_token`` goes with END, never to the executors."""
    from framestream.config import KafkaSettings

    df = (spark.read.format("kafka").options(**KafkaSettings.load(bootstrap=bootstrap)
                                             .spark_options())  # + FRAMESTREAM_KAFKA_SECURITY_*
          .option("subscribe", topic).option("includeHeaders", "true")
          .option("startingOffsets", offsets["starting"])
          .option("endingOffsets", offsets["ending"]).load())
    from etl.directory import for_session

    with for_session(spark, endpoints_file) as directory:
        ctx = FeedContext(spec, endpoints.to_json(), directory.ref, limits, client.model_dump())
        row = (df.mapInArrow(partial(feed_partition, ctx=ctx), COUNTS_DDL)
               .groupBy().sum("fed", "rejected").collect()[0])
    fed, rejected = int(row[0] or 0), int(row[1] or 0)
    held = end_feed(endpoints, client=client, control_token=control_token)
    log.info("fed %d labeled frames to %d ranks (%s each), rejected %d", fed, len(held), held,
             rejected)
    return {"fed": fed, "rejected": rejected, "per_rank": held}


def offset_range(bootstrap: str, topic: str) -> dict[str, str]:
    """Everything on ``topic`` now, as Spark offset JSON (fixes the data range of a run)."""
    from framestream import results

    ends = results.end_offsets(bootstrap, topic)
    return {"starting": json.dumps({topic: {str(p): -2 for p in ends}}),
            "ending": results.spark_offsets(topic, ends)}
