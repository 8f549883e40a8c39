"""The measured phases of ``python -m bench.stream``: throughput grid, peers side by side, latency.

Each phase gets pipelines that are already running and a :class:`Bench` (publisher, outputs,
frame sets, parameters) and returns plain dicts of raw samples and medians for the JSON.
Throughput bursts pause the measured pipeline while its frames are published and pause every
other pipeline for the whole burst (see :mod:`bench.kafka_io`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from bench import kafka_io
from bench.ceilings import threads_for
from bench.common import median
from bench.frameset import FrameSet

log = logging.getLogger(__name__)


@dataclass
class Lane:
    """One pipeline on one frame set: its topics, its output watcher, its process handle."""

    name: str
    fs: FrameSet
    pipeline: Any
    topic_in: str
    outputs: kafka_io.Outputs
    offset: int = 0  # where in the frame set the next burst starts (every burst: new frames)


@dataclass
class Bench:
    pub: kafka_io.Publisher
    params: dict[str, Any]
    lanes: list[Lane] = field(default_factory=list)

    def others(self, lane: Lane) -> list[Any]:
        return [x.pipeline for x in self.lanes if x is not lane and x.pipeline.alive()]

    def burst(self, lane: Lane, count: int, gated: bool = True, rate: float = 0.0,
              timeout: float = 900.0) -> dict[str, Any]:
        paused = self.others(lane)
        for p in paused:
            p.pause()
        try:
            sample = kafka_io.burst(self.pub, lane.fs, lane.topic_in, lane.outputs, count,
                                    rate=rate, timeout=timeout, alive=lane.pipeline.alive,
                                    start=lane.offset, gate=lane.pipeline if gated else None)
        finally:
            for p in paused:
                p.resume()
        lane.offset += count
        return sample

    def warm(self, lane: Lane, count: int) -> dict[str, Any]:
        """A burst whose figures are kept apart (first requests, JIT, connections); its pace
        sizes the measured bursts."""
        return self.burst(lane, count)


def _counts(bench: Bench, set_name: str, repeats: str = "repeats") -> tuple[int, int, int]:
    p = bench.params
    return p["frames"][set_name], p["warmup_frames"][set_name], p[repeats]


def burst_size(bench: Bench, set_name: str, warm_fps: float | None) -> int:
    """Frames for a measured burst: about ``burst_s`` seconds at twice the warm-up's pace (a
    short warm-up burst is dominated by fixed per-micro-batch costs), between the warm-up size
    and ``frames``: a slow batch-1 cell gets fewer frames than a batch-256 one."""
    n, warm, _ = _counts(bench, set_name)
    if not warm_fps:
        return n
    return int(min(n, max(warm, 2 * warm_fps * bench.params["burst_s"])))


def grid(bench: Bench, lane: Lane, ranks: list[int], batches: list[int],
         device: str = "cpu") -> dict[str, Any]:
    """framestream end to end over ranks x max batch: relaunch the ranks per cell."""
    n, warm, repeats = _counts(bench, lane.fs.name)
    cells = []
    for r in ranks:
        for b in batches:
            t = threads_for(r)
            up_s = lane.pipeline.ranks.start(r, b, t, lane.fs.version, device=device)
            warmup = bench.warm(lane, warm)
            size = burst_size(bench, lane.fs.name, warmup["frames_per_s"])
            samples = [bench.burst(lane, size) for _ in range(repeats)]
            fps = median(s["frames_per_s"] for s in samples)
            log.info("%s grid ranks %d x %d threads, max batch %d: %s frames/s", lane.fs.name, r,
                     t, b, fps)
            cells.append({"ranks": r, "threads": t, "max_batch": b, "ranks_start_s": round(up_s, 2),
                          "frames_per_s": fps, "samples": samples,
                          "warmup": {k: warmup[k] for k in ("count", "seconds", "frames_per_s")}})
    best = max(cells, key=lambda c: c["frames_per_s"] or 0)
    return {"cells": cells, "best": {k: best[k] for k in ("ranks", "threads", "max_batch",
                                                           "frames_per_s")}}


def compare(bench: Bench, lanes: list[Lane]) -> dict[str, Any]:
    """Interleaved repeats of the same burst through every lane (framestream and peers)."""
    n, warm, repeats = _counts(bench, lanes[0].fs.name, "peer_repeats")
    out: dict[str, Any] = {}
    for lane in lanes:
        w = bench.warm(lane, warm)
        out[lane.name] = {"startup_s": round(lane.pipeline.startup_s or 0, 2), "samples": [],
                          "warmup": {k: w[k] for k in ("count", "seconds", "frames_per_s")}}
    for rep in range(repeats):
        order = lanes if rep % 2 == 0 else lanes[::-1]  # no pipeline always goes first
        for lane in order:
            s = bench.burst(lane, n)
            out[lane.name]["samples"].append(s)
            log.info("%s compare rep %d %s: %s frames/s", lane.fs.name, rep, lane.name,
                     s["frames_per_s"])
    for lane in lanes:
        samples = out[lane.name]["samples"]
        out[lane.name]["frames_per_s"] = median(s["frames_per_s"] for s in samples)
        out[lane.name]["accuracy"] = median(s["accuracy"] for s in samples)
    return out


def latency(bench: Bench, lane: Lane, max_fps: float, loads: list[float],
            seconds: float) -> list[dict[str, Any]]:
    """The producer paced at each fraction of ``max_fps`` for ``seconds``; latency percentiles."""
    out = []
    warm = bench.params["warmup_frames"][lane.fs.name]
    bench.warm(lane, warm)
    for load in loads:
        rate = max(1.0, load * max_fps)
        count = max(20, int(rate * seconds))
        s = bench.burst(lane, count, gated=False, rate=rate)
        log.info("%s latency at %.0f%% (%.0f frames/s): p50 %.3f p95 %.3f p99 %.3f s",
                 lane.fs.name, 100 * load, rate, s["latency_p50_s"], s["latency_p95_s"],
                 s["latency_p99_s"])
        out.append({"load": load, "rate": round(rate, 1), "seconds": seconds, **s})
    return out
