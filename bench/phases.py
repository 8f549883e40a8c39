"""Bursts through running pipelines, and framestream's latency and CPU breakdown phases.

Each phase gets pipelines that are already running and a :class:`Bench` (publisher, parameters,
the frame-by-frame check) and returns plain dicts for the JSON. Throughput bursts pause the
measured pipeline while its frames are published and pause every other pipeline for the whole
burst (see :mod:`bench.kafka_io` and :data:`bench.fair.TIMING`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import kafka_io
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
    topics: list[str] = field(default_factory=list)  # the topics made for it (dropped with it)


@dataclass
class Bench:
    pub: kafka_io.Publisher
    params: dict[str, Any]
    lanes: list[Lane] = field(default_factory=list)
    #: (prediction records, count) -> counts merged into the sample (frame-by-frame agreement)
    check: Callable[[list[Any], int], dict[str, Any]] | None = None

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
        records = sample.pop("records")
        if self.check is not None:
            sample["check"] = self.check(records, count)
        return sample

    def warm(self, lane: Lane, count: int) -> dict[str, Any]:
        """A burst whose figures are kept apart (first requests, JIT, connections); its pace
        sizes the measured bursts."""
        return self.burst(lane, count)


def latency(bench: Bench, lane: Lane, max_fps: float, loads: list[float],
            seconds: float) -> list[dict[str, Any]]:
    """The producer paced at each fraction of ``max_fps`` for ``seconds``; latency percentiles."""
    out = []
    bench.warm(lane, bench.params["warmup_frames"])
    for load in loads:
        rate = max(1.0, load * max_fps)
        count = max(20, int(rate * seconds))
        s = bench.burst(lane, count, gated=False, rate=rate)
        log.info("%s latency at %.0f%% (%.0f frames/s): p50 %.3f p95 %.3f p99 %.3f s",
                 lane.fs.name, 100 * load, rate, s["latency_p50_s"], s["latency_p95_s"],
                 s["latency_p99_s"])
        out.append({"load": load, "rate": round(rate, 1), "seconds": seconds, **s})
    return out


def breakdown(bench: Bench, lane: Lane, work: Path, count: int, cores: int) -> dict[str, Any]:
    """Where the CPU goes in one burst through ``lane`` (framestream), by role and stage."""
    from bench.breakdown import Profile, broker_pids, summarize

    bench.warm(lane, bench.params["warmup_frames"])
    roles = lane.pipeline.pids()
    roles["broker"] = broker_pids()
    roles["bench"] = [os.getpid()]
    profile = Profile(roles, work)

    class Gate:
        def pause(self) -> None:
            lane.pipeline.pause()

        def prepare(self) -> None:  # the profilers attach while the pipeline is still paused
            profile.start()

        def resume(self) -> None:
            lane.pipeline.resume()

    sample = kafka_io.burst(bench.pub, lane.fs, lane.topic_in, lane.outputs, count,
                            alive=lane.pipeline.alive, start=lane.offset, gate=Gate(),
                            on_done=profile.stop)
    sample.pop("records")
    lane.offset += count
    return {"sample": sample, **summarize(profile, count, cores)}
