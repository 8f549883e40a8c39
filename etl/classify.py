"""What runs on the executors for each micro-batch: decode, send to the ranks, build output rows.

``df.mapInArrow(partial(classify_partition, ctx=ctx), OUT_DDL)``: each Arrow batch of Kafka
records is decoded and resized in slices of ``chunk_frames`` rows; each slice goes to the ranks as
soon as it is decoded (so decoding overlaps inference, and the credit window paces decoding);
the next Arrow batch goes to the ranks before this one's predictions and dead letters are
collected and yielded as one Arrow batch (so the ranks do not idle at Arrow batch seams).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from etl.client import ClientSettings, RankClient, cached_client
from etl.directory import DirectoryRef
from etl.records import DEAD_LETTER, dead_letters, predictions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchContext:
    """Everything the executors need for one micro-batch (shipped with the task by Spark)."""

    batch_id: int
    model_version: str
    spec: dict[str, Any]
    endpoints_json: str
    directory: DirectoryRef | None  # the driver's endpoint directory (etl/directory.py)
    predictions_topic: str
    dlq_topic: str
    topk: int
    limits: dict[str, Any]
    client: dict[str, Any]
    max_record_bytes: int = 1_048_576  # the sink's max.request.size: dead letters are cut to it


def warm_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """mapInArrow body of the warm-up job the driver runs while the ranks start: starts the
    Python worker, imports the ETL and the client, and initialises Pillow's codecs, so the first
    micro-batch does not pay for it (Spark reuses Python workers across jobs)."""
    import io

    from PIL import Image

    from etl import decode  # noqa: F401  (the import is the warm-up)

    Image.init()
    buf = io.BytesIO()
    Image.new("L", (4, 4)).save(buf, "PNG")
    Image.open(io.BytesIO(buf.getvalue())).load()
    for batch in batches:
        yield pa.record_batch([pa.array([batch.num_rows], pa.int64())], names=["rows"])


def classify_partition(batches: Iterator[pa.RecordBatch], ctx: BatchContext,
                       counts: tuple[Any, Any] | None = None) -> Iterator[pa.RecordBatch]:
    """mapInArrow body; ``counts`` are Spark accumulators (predictions, dead letters).

    Arrow batches are pipelined: batch k+1 is decoded and handed to the ranks before the rows of
    batch k are collected and yielded, so the ranks stay busy while this worker waits for Spark's
    next batch or for batch k's last replies (``batches_ahead`` of the client settings; 0 collects
    each batch before reading the next)."""
    from etl.decode import FrameLimits
    from framestream import frames
    from models.spec import PreprocessSpec

    spec = PreprocessSpec.from_dict(ctx.spec)
    limits = FrameLimits(**ctx.limits)
    client = cached_client(ctx.endpoints_json, ctx.directory, ClientSettings(**ctx.client))
    held: deque[Submitted] = deque()
    for seq, batch in enumerate(batches):  # a failed task ends its Python worker: no leftovers
        if batch.num_rows:
            held.append(submit_batch(seq, batch, ctx, spec, limits, client))
        while len(held) > client.settings.batches_ahead:
            yield _finished(held.popleft(), ctx, spec, client, frames, counts)
    while held:
        yield _finished(held.popleft(), ctx, spec, client, frames, counts)


@dataclass
class Submitted:
    """An Arrow batch whose decoded frames are with the ranks."""

    batch: pa.RecordBatch
    tags: list[tuple[int, int]]     # one request per decoded slice: (batch seq, slice start)
    ok_rows: list[np.ndarray]       # the batch rows each request carries
    bad_rows: list[np.ndarray]
    reasons: list[str]
    details: list[str]


def submit_batch(seq: int, batch: pa.RecordBatch, ctx: BatchContext, spec: Any, limits: Any,
                 client: RankClient) -> Submitted:
    """Decode ``batch`` in slices of ``chunk_frames`` rows, each sent as soon as it is decoded
    (decode of slice k+1 overlaps the forward of slice k; the credit window paces decoding)."""
    from etl.decode import decode_batch

    chunk = client.settings.chunk_frames
    values = batch.column("value")
    sub = Submitted(batch, [], [], [], [], [])
    for start in range(0, batch.num_rows, chunk):
        decoded = decode_batch(values.slice(start, chunk), spec, limits)
        if len(decoded.ok_index):
            client.submit((seq, start), decoded.images, ctx.model_version)
            sub.tags.append((seq, start))
            sub.ok_rows.append(decoded.ok_index + start)
        sub.bad_rows.append(decoded.bad_index + start)
        sub.reasons += decoded.reasons
        sub.details += decoded.details
    return sub


def _finished(sub: Submitted, ctx: BatchContext, spec: Any, client: RankClient, frames: Any,
              counts: tuple[Any, Any] | None) -> pa.RecordBatch:
    out = collect_batch(sub, ctx, spec, client, frames)
    if counts is not None:
        dead = out.column("kind").to_numpy(zero_copy_only=False) == DEAD_LETTER
        counts[0].add(int(out.num_rows - dead.sum()))
        counts[1].add(int(dead.sum()))
    return out


def collect_batch(sub: Submitted, ctx: BatchContext, spec: Any, client: RankClient,
                  frames: Any) -> pa.RecordBatch:
    """Wait for ``sub``'s answers; its predictions and dead letters as one Arrow batch."""
    answers = client.gather(sub.tags)
    if sub.tags:
        got = [answers[t] for t in sub.tags]
        rows = np.concatenate(sub.ok_rows)
        scores = np.concatenate([a.scores for a in got])
        ranks = np.concatenate([np.full(len(r), a.rank) for a, r in zip(got, sub.ok_rows)])
        used = {a.version for a in got}
        if used != {ctx.model_version}:
            raise RuntimeError(f"batch {ctx.batch_id} pinned model {ctx.model_version} but ranks "
                               f"answered with {sorted(used)}")
    else:
        rows = np.zeros(0, np.int64)
        scores = np.zeros((0, max(1, len(spec.class_names))), np.float32)
        ranks = np.zeros(0, np.int64)
    batch = sub.batch
    out = [predictions(rows, scores, ranks, ctx.model_version, ctx.batch_id, batch,
                       spec.class_names, ctx.topk, ctx.predictions_topic, frames.FRAME_ID_HEADER,
                       frames.CAPTURE_TS_HEADER, frames.LABEL_HEADER)]
    bad = np.concatenate(sub.bad_rows) if sub.bad_rows else np.zeros(0, np.int64)
    if len(bad):
        out.append(dead_letters(bad, sub.reasons, sub.details, batch, ctx.dlq_topic,
                                ctx.max_record_bytes))
    return pa.concat_batches(out) if len(out) > 1 else out[0]
