"""The executor's mapInArrow body against real ranks (real ZeroMQ, real RankServer loops):
Arrow batches are pipelined (batch k+1 is with the ranks before batch k is collected) and every
row still gets its own answer, in order, with dead letters beside them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from etl import client as client_mod
from etl.classify import BatchContext, classify_partition
from etl.client import ClientSettings, cached_client
from etl.decode import FrameLimits, decode_batch
from etl.records import DEAD_LETTER, PREDICTION
from framestream.frames import encode_image
from framestream.records import DLQ_REASON
from mpi_workers.server_loop import forward
from models.nets import DEFAULT_SPECS
from tests.zmq.test_rank_client import VERSION, endpoint_set, frames, two_ranks  # noqa: F401

pytestmark = pytest.mark.zmq
SPEC = DEFAULT_SPECS["fashion_cnn"]


def kafka_batch(first_offset: int, images: np.ndarray, corrupt: set[int]) -> pa.RecordBatch:
    """Rows shaped like Spark's Kafka source gives them to mapInArrow."""
    n = len(images)
    values = [b"\xff\xd8 not a jpeg" if i in corrupt else encode_image(images[i], "png")
              for i in range(n)]
    return pa.record_batch({
        "key": pa.array([f"cam-{i % 3}".encode() for i in range(n)], pa.binary()),
        "value": pa.array(values, pa.binary()),
        "topic": pa.array(["frames"] * n, pa.string()),
        "partition": pa.array([0] * n, pa.int32()),
        "offset": pa.array(range(first_offset, first_offset + n), pa.int64()),
        "timestamp": pa.array([0] * n, pa.timestamp("us")),
    })


def test_arrow_batches_are_pipelined_and_every_row_gets_its_own_answer(two_ranks,  # noqa: F811
                                                                     tmp_path: Path) -> None:
    sizes, corrupt = (40, 1, 33), {0: {5}, 2: {0, 32}}
    images = [frames(n, seed=i) for i, n in enumerate(sizes)]
    starts = np.cumsum((0,) + sizes[:-1]).tolist()
    batches = [kafka_batch(starts[i], images[i], corrupt.get(i, set())) for i in range(len(sizes))]
    settings = ClientSettings(chunk_frames=16)
    ctx = BatchContext(7, VERSION, SPEC.to_dict(), endpoint_set(1, *two_ranks).to_json(),
                       None, "predictions", "frames.dlq", 3,
                       FrameLimits().model_dump(), settings.model_dump())
    client = cached_client(ctx.endpoints_json, ctx.directory, settings)
    events: list[tuple[str, Any]] = []
    submit, gather = client.submit, client.gather

    def spy_submit(tag: Any, *args: Any, **kwargs: Any) -> None:
        events.append(("submit", tag))
        submit(tag, *args, **kwargs)

    def spy_gather(tags: Any = None) -> Any:
        events.append(("gather", tuple(tags or ())))
        return gather(tags)

    client.submit, client.gather = spy_submit, spy_gather  # type: ignore[method-assign]
    try:
        pulled: list[int] = []

        def source():
            for i, b in enumerate(batches):
                pulled.append(i)
                yield b

        out = []
        for got in classify_partition(source(), ctx):
            out.append((len(pulled), got))
    finally:
        client_mod._clients.pop("").close()

    # pipelined: batch k's rows are yielded only after batch k+1 was pulled and sent to the ranks
    assert [n for n, _ in out] == [2, 3, 3]
    seqs = [tag[0] for kind, tag in events if kind == "submit"]
    first_gather = next(i for i, (kind, _) in enumerate(events) if kind == "gather")
    assert len(set(seqs[:first_gather])) == 2, events
    assert len(set(seqs)) == 3  # request tags are unique across batches

    model = two_ranks[0].models.get(VERSION)
    for i, (_, got) in enumerate(out):
        kinds = got.column("kind").to_pylist()
        assert len(kinds) == sizes[i]
        values = [json.loads(v) if k == PREDICTION else None
                  for k, v in zip(kinds, got.column("value").to_pylist())]
        offsets = [v["offset"] for v in values if v]
        want = [starts[i] + j for j in range(sizes[i]) if j not in corrupt.get(i, set())]
        assert offsets == want
        decoded = decode_batch(batches[i].column("value"), SPEC)
        local = forward(model, decoded.images, 256).argmax(axis=1).tolist()
        assert [v["class_index"] for v in values if v] == local
        dead = [h for k, h in zip(kinds, got.column("headers").to_pylist()) if k == DEAD_LETTER]
        assert len(dead) == len(corrupt.get(i, ()))
        assert all({h["key"]: h["value"] for h in d}[DLQ_REASON] for d in dead)
