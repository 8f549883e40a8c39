"""The fair bench's pure parts: partition spreading, statistics, sweep choice, round order and
frame-by-frame agreement with the model alone. No processes, no broker: unit-tested.
"""

from __future__ import annotations

import json
import random
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

#: Where two scores count as a tie: the model alone's top two scores closer than this may flip
#: between runtimes or batch compositions, so such frames are counted apart.
NEAR_TIE = 1e-4

TIMING = (
    "Each pipeline runs as one long-lived set of processes (its Spark JVM, Python workers, "
    "actors or ranks are kept across rounds). A burst: every pipeline is paused (SIGSTOP), the "
    "burst's frames are published to the measured pipeline's own input topic, spread equally "
    "over all partitions; then the measured pipeline alone is resumed (SIGCONT). Start of reading "
    "= that resume: the pipeline's next poll (kafka-python), micro-batch (Spark) or query "
    "trigger (framestream) is its first read of the burst. Last prediction = the latest "
    "`prediction_ts` the pipeline itself stamped on the burst's predictions (same host clock). "
    "frames/s = distinct frames predicted / (last prediction - start of reading). Start-up = "
    "process start -> ready to read (the peer's ready file, framestream's --ready-file, after "
    "its ranks published their endpoints), timed with every other pipeline paused.")

WARMUP = (
    "The same for every pipeline: after each (re)start at a setting, one untimed warm-up burst of "
    "`warmup_frames` frames through the very processes then timed (JVM JIT, Python workers, "
    "model load, Kafka connections); figures of warm-up bursts are kept apart and never enter "
    "a statistic. Sweeps restart the pipeline per setting; the rounds restart it once at its "
    "chosen setting and warm it the same way.")


def partition_keys(partitions: int, prefix: str = "cam-", limit: int = 10_000) -> list[str]:
    """One record key per partition, ``keys[p]`` landing on partition ``p`` under kafka-python's
    default (murmur2) partitioner, so frames sent round-robin over the keys fill every partition
    equally. Raises ValueError when no such key is found within ``limit`` candidates."""
    from kafka.partitioner.default import murmur2

    if partitions < 1:
        raise ValueError(f"partitions must be >= 1, not {partitions}")
    keys: dict[int, str] = {}
    for i in range(limit):
        key = f"{prefix}{i}"
        p = (murmur2(key.encode()) & 0x7FFFFFFF) % partitions
        keys.setdefault(p, key)
        if len(keys) == partitions:
            return [keys[p] for p in range(partitions)]
    raise ValueError(f"no key {prefix}N (N < {limit}) lands on partitions "
                     f"{sorted(set(range(partitions)) - set(keys))} of {partitions}")


def assign(partitions: Sequence[int], worker: int, workers: int) -> list[int]:
    """The partitions worker ``worker`` of ``workers`` consumes: every partition exactly once,
    shares differing by at most one. Raises ValueError when a worker would get none."""
    if not 0 <= worker < workers:
        raise ValueError(f"worker {worker} is not in 0..{workers - 1}")
    if len(partitions) < workers:
        raise ValueError(f"{workers} workers on {len(partitions)} partitions: some would idle; "
                         f"make the topic with >= {workers} partitions")
    return sorted(partitions)[worker::workers]


def spread(counts: dict[Any, int]) -> float | None:
    """max / min of the counts (1.0 = perfectly even); None when empty or some count is 0."""
    vals = list(counts.values())
    if not vals or min(vals) == 0:
        return None
    return round(max(vals) / min(vals), 4)


def stats(values: Iterable[float | None]) -> dict[str, float | None]:
    xs = sorted(v for v in values if v is not None)
    if not xs:
        return {"min": None, "median": None, "max": None, "n": 0}
    return {"min": xs[0], "median": statistics.median(xs), "max": xs[-1], "n": len(xs)}


def choose(sweep: list[dict[str, Any]]) -> dict[str, Any]:
    """The sweep point with the best median frames/s (ties: the earlier point). Each point is
    ``{"setting": {...}, "frames_per_s": [samples]}``."""
    if len(sweep) == 1:
        return sweep[0]["setting"]
    scored = [(stats(p["frames_per_s"])["median"], i, p) for i, p in enumerate(sweep)]
    scored = [s for s in scored if s[0] is not None]
    if not scored:
        raise ValueError("no sweep point produced a frames/s figure")
    return max(scored, key=lambda s: (s[0], -s[1]))[2]["setting"]


def round_orders(names: Sequence[str], rounds: int, seed: int) -> list[list[str]]:
    """A seeded random order of the pipelines for each round (recorded in the JSON)."""
    rng = random.Random(seed)
    out = []
    for _ in range(rounds):
        order = list(names)
        rng.shuffle(order)
        out.append(order)
    return out


def reference(probs: np.ndarray, tol: float = NEAR_TIE) -> tuple[np.ndarray, np.ndarray]:
    """(class per frame, near-tie flag per frame) of the model alone's probabilities."""
    top2 = np.sort(probs, axis=1)[:, -2:]
    return probs.argmax(1), (top2[:, 1] - top2[:, 0]) < tol


def agreement(preds: list[dict[str, Any]], run: str, count: int, classes: np.ndarray,
              ties: np.ndarray) -> dict[str, Any]:
    """Compare one burst's predictions (``frame_id``, ``class_index``, ``partition``, worker as
    ``worker`` or ``rank``) frame by frame with the model alone.

    ``agree`` + ``disagree`` + ``disagree_near_tie`` = distinct frames predicted; ``lost`` =
    ``count`` - distinct frames; ``duplicates`` = further records of a frame already seen;
    ``conflicting`` = frames whose copies disagree with each other; ``near_ties`` = frames
    predicted whose model-alone top two scores are within the tolerance.
    """
    first: dict[int, int] = {}
    conflicting: set[int] = set()
    parts: Counter[str] = Counter()
    workers: Counter[str] = Counter()
    foreign = dups = 0
    for p in preds:
        fid = p.get("frame_id")
        if not fid or not fid.startswith(run + "-"):
            foreign += 1
            continue
        n = int(fid[len(run) + 1:])
        if n in first:
            dups += 1
            if first[n] != p["class_index"]:
                conflicting.add(n)
            continue
        first[n] = p["class_index"]
        parts[str(p.get("partition"))] += 1
        workers[str(p.get("worker", p.get("rank")))] += 1
    agree = disagree = near_tie_disagree = near = 0
    size = len(classes)
    for n, cls in first.items():
        j = n % size
        near += bool(ties[j])
        if cls == classes[j]:
            agree += 1
        elif ties[j]:
            near_tie_disagree += 1
        else:
            disagree += 1
    return {"frames": len(first), "agree": agree, "disagree": disagree,
            "disagree_near_tie": near_tie_disagree, "near_ties": near,
            "lost": count - len(first), "duplicates": dups, "conflicting": len(conflicting),
            "foreign": foreign, "per_partition": dict(sorted(parts.items())),
            "per_worker": dict(sorted(workers.items()))}


def parse(records: Iterable[Any]) -> list[dict[str, Any]]:
    """Prediction records (Kafka ``value`` = JSON) as dicts."""
    return [json.loads(r.value) for r in records]


def add_counts(total: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    """Sum two :func:`agreement` results (counts and per-key counters)."""
    out = dict(total)
    for k, v in part.items():
        if isinstance(v, dict):
            merged = Counter(out.get(k, {}))
            merged.update(v)
            out[k] = dict(sorted(merged.items()))
        elif isinstance(v, int):
            out[k] = out.get(k, 0) + v
    return out


COUNTS = ("agree", "disagree", "disagree_near_tie", "near_ties", "lost", "duplicates",
          "conflicting")


def aggregate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """One pipeline's timed bursts (each with ``frames_per_s``, ``seconds``, ``count``,
    ``producer.per_partition`` and ``check`` from :func:`agreement`) as the fields every
    pipeline reports: spread of frames/s and seconds, frames per partition (sent, from the
    topic; and predicted) and per worker, agreement with the model alone, lost, duplicates."""
    counts: dict[str, Any] = {}
    sent: Counter[str] = Counter()
    for s in samples:
        counts = add_counts(counts, s["check"])
        sent.update(s["producer"]["per_partition"])
    frames = counts.get("frames", 0)
    workers = counts.get("per_worker", {})
    return {"rounds": len(samples), "frames_per_s": stats(s["frames_per_s"] for s in samples),
            "seconds": stats(s["seconds"] for s in samples), "frames_sent": sum(
                s["count"] for s in samples), "frames": frames,
            "agreement": round(counts.get("agree", 0) / frames, 6) if frames else None,
            **{k: counts.get(k, 0) for k in COUNTS},
            "per_partition_sent": dict(sorted(sent.items())),
            "per_partition": counts.get("per_partition", {}), "per_worker": workers,
            "partition_spread": spread(dict(sent)), "worker_spread": spread(workers),
            "samples": samples}
