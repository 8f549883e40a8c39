"""The pipelines the fair bench compares, the settings each one is swept over, and how one is
started at a setting (fresh topics, its own work folder) and stopped.

Every pipeline reads its own fresh input topic (``partitions`` partitions, the same frames),
loads the same registry version, and writes the same prediction fields to its own output topic.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import kafka_io
from bench.frameset import FrameSet
from bench.phases import Lane
from bench.pipelines import Framestream, Peer

log = logging.getLogger(__name__)

PIPELINES = ("framestream", "ray_actors", "spark_udf", "noframe")
TITLES = {"framestream": "framestream (Spark → ZeroMQ → MPI ranks)",
          "ray_actors": "Kafka + Ray actors (kafka-python consumers)",
          "spark_udf": "Spark `predict_batch_udf`",
          "noframe": "one kafka-python consumer + torch loop"}


def grid(**axes: list[Any]) -> list[dict[str, Any]]:
    """Every combination of the axes, as settings dicts (in the order the axes vary)."""
    keys = list(axes)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(axes[k] for k in keys))]


def sweeps(profile: str, cores: int) -> dict[str, list[dict[str, Any]]]:
    """Each pipeline's sweep for ``profile`` (smoke: mostly single points, to prove the code)."""
    two = max(1, cores)
    if profile == "smoke":
        return {
            "framestream": grid(ranks=[two], threads=[1], max_batch=[256], chunk_frames=[256],
                                credits=[2], max_offsets=[20000]),
            "ray_actors": grid(workers=[two], threads=[1], batch=[256]),
            "spark_udf": grid(workers=[two], threads=[1], batch=[256], arrow_batch=[2048],
                              min_partitions=[4], max_offsets=[20000]),
            "noframe": grid(workers=[1], threads=[two], batch=[64, 256]),
        }
    polls = [64, 256, 1024]
    if profile == "quick":
        return {
            "framestream": grid(ranks=[two], threads=[1], max_batch=[20, 256],
                                chunk_frames=[256, 1024], credits=[2], max_offsets=[20000]),
            "ray_actors": grid(workers=[two], threads=[1], batch=polls),
            "spark_udf": grid(workers=[two], threads=[1], batch=[256, 1024],
                              arrow_batch=[2048, 10000], min_partitions=[4, 8],
                              max_offsets=[20000]),
            "noframe": grid(workers=[1], threads=[two], batch=polls),
        }
    return {
        "framestream": grid(ranks=[two, 2 * two], threads=[1], max_batch=[20, 64, 256, 1024],
                            chunk_frames=[256, 1024], credits=[2, 4], max_offsets=[20000]),
        "ray_actors": grid(workers=[two], threads=[1], batch=polls),
        "spark_udf": grid(workers=[two], threads=[1], batch=[256, 1024],
                          arrow_batch=[2048, 10000], min_partitions=[4, 8],
                          max_offsets=[5000, 20000]),
        "noframe": grid(workers=[1], threads=[two], batch=polls),
    }


@dataclass
class Context:
    """What every start needs: the frames, the model, the broker, where to write."""

    fs: FrameSet
    version: str
    registry: str | None
    bootstrap: str
    run_id: str
    work: Path
    partitions: int = 4
    trigger_s: float = 0.5
    device: str = "cpu"


def peer_args(setting: dict[str, Any]) -> list[str]:
    """A peer's settings as its command-line flags (``arrow_batch`` -> ``--arrow-batch``)."""
    out: list[str] = []
    for key, value in setting.items():
        out += [f"--{key.replace('_', '-')}", str(value)]
    return out


def start(name: str, setting: dict[str, Any], ctx: Context, tag: str) -> Lane:
    """``name`` started at ``setting`` on fresh topics; its start-up time in ``startup_s``."""
    topics = {k: kafka_io.topic_names(ctx.run_id, name, tag, k) for k in ("in", "out", "dlq")}
    kafka_io.make_topics(ctx.bootstrap, list(topics.values()), ctx.partitions)
    work = ctx.work / f"{name}-{tag}"
    pipeline: Any
    try:
        if name == "framestream":
            pipeline = Framestream(topics["in"], topics["out"], topics["dlq"], ctx.version, work,
                                   setting["chunk_frames"], setting["credits"], ctx.trigger_s,
                                   setting["max_offsets"], ctx.registry)
            ranks_s = pipeline.ranks.start(setting["ranks"], setting["max_batch"],
                                           setting["threads"], ctx.version, device=ctx.device,
                                           registry=ctx.registry)
            spark_s = pipeline.start()
            pipeline.startup_s = ranks_s + spark_s  # ranks up, then spark-submit to the query
        elif name in PIPELINES:
            extra = ["--trigger-interval", str(ctx.trigger_s),
                     "--checkpoint", str(work / "checkpoint")] if name == "spark_udf" else []
            args = ["--set", ctx.fs.name, "--topic-in", topics["in"], "--topic-out",
                    topics["out"], "--bootstrap", ctx.bootstrap, "--version", ctx.version,
                    *(["--registry", ctx.registry] if ctx.registry else []), *peer_args(setting),
                    *extra]
            pipeline = Peer(name, f"bench.peers.{name}", args, work)
            pipeline.start()
        else:
            raise ValueError(f"unknown pipeline {name!r}: one of {PIPELINES}")
    except BaseException:
        kafka_io.drop_topics(ctx.bootstrap, list(topics.values()))
        raise
    log.info("%s up at %s in %.1f s", name, setting, pipeline.startup_s)
    lane = Lane(name, ctx.fs, pipeline, topics["in"],
                kafka_io.Outputs(ctx.bootstrap, topics["out"]))
    lane.topics = list(topics.values())
    return lane


def stop(lane: Lane, bootstrap: str) -> None:
    try:
        lane.pipeline.stop()
    except Exception as exc:  # keep stopping: the topics and the other lanes must go too
        log.error("stopping %s: %s", lane.name, exc)
    if lane.outputs is not None:
        lane.outputs.close()
    kafka_io.drop_topics(bootstrap, lane.topics)
