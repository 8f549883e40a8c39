"""What the kafka-python peers share: flags, the consume -> decode -> classify -> produce loop.

Same frames (the input topic), same decode + resize code (``etl.decode.decode_batch``), same
forward pass (``mpi_workers.server_loop.forward``), the same registry version loaded and
checksummed as the ranks load it (:func:`bench.frameset.model`) and the same prediction fields as
framestream's sink (top 3 classes, capture and prediction times, plus ``worker``: which actor or
process answered, as framestream's ``rank``), written with the same producer settings (acks=all,
idempotent, linger 5 ms).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from framestream.frames import CAPTURE_TS_HEADER, FRAME_ID_HEADER, LABEL_HEADER

log = logging.getLogger(__name__)


def parser(prog: str, doc: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=doc)
    p.add_argument("--set", default="fashion", choices=("fashion", "imagenet"))
    p.add_argument("--topic-in", required=True)
    p.add_argument("--topic-out", required=True)
    p.add_argument("--bootstrap", default="127.0.0.1:9092")
    p.add_argument("--batch", type=int, default=256,
                   help="frames per forward pass (and max_poll_records of a consumer)")
    p.add_argument("--version", default=None, help="registry version (default: random weights)")
    p.add_argument("--registry", default=None, help="registry root (default: the state dir's)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (actors, Python workers)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    p.add_argument("--ready-file", default="", help="touched once the pipeline is up")
    p.add_argument("--runtime", default="eager", choices=("eager", "onnxruntime"),
                   help="the model step: eager torch (as users write it) or the ranks' ONNX "
                        "Runtime step with its parity gate (the same-runtime comparison)")
    return p


def stop_on_sigterm() -> Callable[[], bool]:
    """Returns ``stopping()``: True once SIGTERM or SIGINT arrived."""
    state = {"stop": False}

    def handler(*_: Any) -> None:
        state["stop"] = True
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return lambda: state["stop"]


def touch(path: str) -> None:
    if path:
        Path(path).write_text(str(time.time()))


def prediction_json(record: Any, probs: np.ndarray, names: tuple[str, ...], now: float,
                    worker: str = "", topk: int = 3) -> bytes:
    h = {k: v for k, v in (record.headers or [])}
    order = np.argsort(-probs, kind="stable")[:topk]
    top = [{"index": int(c), "name": names[c] if c < len(names) else str(c),
            "score": float(probs[c])} for c in order]
    label = h.get(LABEL_HEADER)
    capture = h.get(CAPTURE_TS_HEADER)
    return json.dumps({
        "topic": record.topic, "partition": record.partition, "offset": record.offset,
        "key": record.key.decode() if record.key else None,
        "frame_id": h[FRAME_ID_HEADER].decode() if FRAME_ID_HEADER in h else None,
        "label": int(label) if label is not None else None, "class_index": top[0]["index"],
        "class_name": top[0]["name"], "topk": top, "ingest_ts": record.timestamp / 1000.0,
        "capture_ts": float(capture) if capture is not None else None, "prediction_ts": now,
        "worker": worker,
    }, separators=(",", ":")).encode()


def kafka_loop(set_name: str, topic_in: str, topic_out: str, bootstrap: str, batch: int,
               threads: int, worker: int, workers: int, stopping: Callable[[], bool],
               on_ready: Callable[[], None] = lambda: None, version: str | None = None,
               registry: str | None = None, runtime: str = "eager") -> int:
    """Consume this worker's share of ``topic_in``'s partitions (:func:`bench.fair.assign` over
    the topic's actual partitions: every partition once, shares within one) from their end,
    classify in batches of ``batch``, produce predictions. Returns the frames classified when
    ``stopping()`` is True.

    Partitions are assigned, not balanced by a consumer group: each worker owns its partitions
    from the start (a group's rebalances cost tens of seconds with kafka-python when members
    join one after the other), as the Kafka + Ray paper's actors do.
    """
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    from bench.fair import assign
    from bench.frameset import model as load_model
    from etl.decode import decode_batch
    from mpi_workers.server_loop import forward

    model = load_model(set_name, threads=threads, version=version, registry=registry,
                       runtime=runtime)
    spec = model.spec
    names = tuple(spec.class_names)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             max_poll_records=batch, fetch_max_bytes=64 << 20,
                             max_partition_fetch_bytes=16 << 20)
    parts = sorted(consumer.partitions_for_topic(topic_in) or [])
    mine = [TopicPartition(topic_in, p) for p in assign(parts, worker, workers)]
    log.warning("worker %d of %d consumes partitions %s of %s", worker, workers,
                [tp.partition for tp in mine], topic_in)
    consumer.assign(mine)
    consumer.seek_to_end(*mine)
    for tp in mine:
        consumer.position(tp)  # resolve "the end" now, before any frame of a burst is sent
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                             linger_ms=5, max_request_size=4 << 20)
    on_ready()
    done = 0
    try:
        while not stopping():
            polled = consumer.poll(timeout_ms=100, max_records=batch)
            records = [r for part in polled.values() for r in part]
            if not records:
                continue
            decoded = decode_batch([r.value for r in records], spec)
            probs = forward(model, decoded.images, batch) if len(decoded.ok_index) else None
            now = time.time()
            for k, i in enumerate(decoded.ok_index):
                producer.send(topic_out, key=records[i].key,
                              value=prediction_json(records[i], probs[k], names, now,
                                                    f"worker-{worker}"))
            done += len(decoded.ok_index)
    finally:
        producer.flush(30)
        producer.close(10)
        consumer.close()
    return done
