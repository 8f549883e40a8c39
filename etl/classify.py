"""What runs on the executors for each micro-batch: decode, send to the ranks, build output rows.

``df.mapInArrow(partial(classify_partition, ctx=ctx), OUT_DDL)``: each Arrow batch of Kafka
records is decoded and resized in slices of ``chunk_frames`` rows; each slice goes to the ranks as
soon as it is decoded (so decoding overlaps inference, and the credit window paces decoding);
then predictions and dead letters come back as one Arrow batch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from etl.client import ClientSettings, RankClient, cached_client
from etl.records import DEAD_LETTER, dead_letters, predictions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchContext:
    """Everything the executors need for one micro-batch (shipped with the task by Spark)."""

    batch_id: int
    model_version: str
    spec: dict[str, Any]
    endpoints_json: str
    endpoints_file: str
    predictions_topic: str
    dlq_topic: str
    topk: int
    limits: dict[str, Any]
    client: dict[str, Any]


def warm_partition(batches: Iterator[pa.RecordBatch], endpoints_json: str, endpoints_file: str,
                   client: dict[str, Any]) -> Iterator[pa.RecordBatch]:
    """mapInArrow body of the warm-up job the driver runs before the query: starts the Python
    worker, imports the ETL, initialises Pillow's codecs and opens the sockets to the ranks, so
    the first micro-batch does not pay for it (Spark reuses Python workers across jobs)."""
    import io

    from PIL import Image

    from etl import decode  # noqa: F401  (the import is the warm-up)

    Image.init()
    buf = io.BytesIO()
    Image.new("L", (4, 4)).save(buf, "PNG")
    Image.open(io.BytesIO(buf.getvalue())).load()
    cached_client(endpoints_json, endpoints_file, ClientSettings(**client))
    for batch in batches:
        yield pa.record_batch([pa.array([batch.num_rows], pa.int64())], names=["rows"])


def classify_partition(batches: Iterator[pa.RecordBatch], ctx: BatchContext,
                       counts: tuple[Any, Any] | None = None) -> Iterator[pa.RecordBatch]:
    """mapInArrow body; ``counts`` are Spark accumulators (predictions, dead letters)."""
    from etl.decode import FrameLimits
    from framestream import frames
    from models.spec import PreprocessSpec

    spec = PreprocessSpec.from_dict(ctx.spec)
    limits = FrameLimits(**ctx.limits)
    client = cached_client(ctx.endpoints_json, ctx.endpoints_file, ClientSettings(**ctx.client))
    for batch in batches:
        if batch.num_rows:
            out = classify_batch(batch, ctx, spec, limits, client, frames)
            if counts is not None:
                dead = out.column("kind").to_numpy(zero_copy_only=False) == DEAD_LETTER
                counts[0].add(int(out.num_rows - dead.sum()))
                counts[1].add(int(dead.sum()))
            yield out


def classify_batch(batch: pa.RecordBatch, ctx: BatchContext, spec: Any, limits: Any,
                   client: RankClient, frames: Any) -> pa.RecordBatch:
    from etl.decode import decode_batch

    chunk = client.settings.chunk_frames
    values = batch.column("value")
    ok_rows, bad_rows, reasons, details = [], [], [], []
    for start in range(0, batch.num_rows, chunk):
        decoded = decode_batch(values.slice(start, chunk), spec, limits)
        if len(decoded.ok_index):
            client.submit(start, decoded.images, ctx.model_version)
            ok_rows.append((start, decoded.ok_index + start))
        bad_rows.append(decoded.bad_index + start)
        reasons += decoded.reasons
        details += decoded.details
    answers = client.gather()
    rows = np.concatenate([r for _, r in ok_rows]) if ok_rows else np.zeros(0, np.int64)
    if ok_rows:
        scores = np.concatenate([answers[start].scores for start, _ in ok_rows])
        ranks = np.concatenate([np.full(len(r), answers[start].rank) for start, r in ok_rows])
        used = {answers[start].version for start, _ in ok_rows}
        if used != {ctx.model_version}:
            raise RuntimeError(f"batch {ctx.batch_id} pinned model {ctx.model_version} but ranks "
                               f"answered with {sorted(used)}")
    else:
        scores = np.zeros((0, max(1, len(spec.class_names))), np.float32)
        ranks = np.zeros(0, np.int64)
    out = [predictions(rows, scores, ranks, ctx.model_version, ctx.batch_id, batch,
                       spec.class_names, ctx.topk, ctx.predictions_topic, frames.FRAME_ID_HEADER,
                       frames.CAPTURE_TS_HEADER, frames.LABEL_HEADER)]
    bad = np.concatenate(bad_rows) if bad_rows else np.zeros(0, np.int64)
    if len(bad):
        out.append(dead_letters(bad, reasons, details, batch, ctx.dlq_topic))
    return pa.concat_batches(out) if len(out) > 1 else out[0]
