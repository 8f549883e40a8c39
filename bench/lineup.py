"""The pipelines the fair bench compares, the settings each one is swept over, and how one is
started at a setting (fresh topics, its own work folder) and stopped.

Every pipeline reads its own fresh input topic (``partitions`` partitions, the same frames),
loads the same registry version, and writes the same prediction fields to its own output topic.

A *lane* is a pipeline with the model step it runs: ``ray_actors`` is the peer as its users run it
(eager torch), ``ray_actors@onnxruntime`` the same peer with framestream's ONNX Runtime step (the
ranks' loader and parity gate), ``framestream`` the stream as shipped (``--runtime auto``: ONNX
Runtime on a CPU when it passes the gate) and ``framestream@eager`` with eager torch. So the bench
compares as shipped, and architecture against architecture at the same runtime.
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
#: the model step each pipeline runs as its users run it
SHIPPED = {"framestream": "auto", "ray_actors": "eager", "spark_udf": "eager", "noframe": "eager"}
RUNTIME_TITLES = {"auto": "as shipped: ONNX Runtime", "eager": "eager torch",
                  "onnxruntime": "ONNX Runtime"}
#: as shipped, then each pipeline at the other runtime
LANES = ("framestream", "ray_actors", "spark_udf", "noframe", "framestream@eager",
         "ray_actors@onnxruntime", "spark_udf@onnxruntime", "noframe@onnxruntime")
#: the setting that meets the model step (re-swept when a lane changes runtime)
BATCH_AXIS = {"framestream": "max_batch", "ray_actors": "batch", "spark_udf": "batch",
              "noframe": "batch"}
#: the two Spark pipelines' trigger interval, seconds: framestream's shipped 0.5 and Spark's own
#: default, 0 (the next micro-batch as soon as the last one ends)
TRIGGERS = [0.5, 0.0]


def split(lane: str) -> tuple[str, str]:
    """``"ray_actors@onnxruntime"`` -> ``("ray_actors", "onnxruntime")``; no ``@``: as shipped."""
    name, _, runtime = lane.partition("@")
    if name not in PIPELINES:
        raise ValueError(f"unknown pipeline {name!r} in lane {lane!r}: one of {PIPELINES}")
    runtime = runtime or SHIPPED[name]
    if runtime not in RUNTIME_TITLES:
        raise ValueError(f"unknown runtime {runtime!r} in lane {lane!r}: one of "
                         f"{tuple(RUNTIME_TITLES)}")
    return name, runtime


def title(lane: str) -> str:
    name, runtime = split(lane)
    return f"{TITLES[name]} [{RUNTIME_TITLES[runtime]}]"


def twin_points(lane: str, base: dict[str, Any], profile: str, cores: int) -> list[dict[str, Any]]:
    """A lane at another runtime than its pipeline as shipped: the shipped lane's chosen setting
    with the batch axis swept again (the runtime changes what the model step costs per call, not
    the Kafka or Spark side the other axes tune)."""
    name, _ = split(lane)
    axis = BATCH_AXIS[name]
    values = {p[axis] for p in sweeps(profile, cores)[name]} | {base[axis]}
    return [{**base, axis: v} for v in sorted(values)]


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
                                credits=[2], max_offsets=[20000], trigger_s=[0.0]),
            "ray_actors": grid(workers=[two], threads=[1], batch=[256]),
            "spark_udf": grid(workers=[two], threads=[1], batch=[256], arrow_batch=[2048],
                              min_partitions=[4], max_offsets=[20000], trigger_s=[0.0]),
            "noframe": grid(workers=[1], threads=[two], batch=[64, 256]),
        }
    polls = [64, 256, 1024]
    if profile == "quick":
        return {
            # chunk frames and min partitions moved little in the 2026-12-02 run (medians within
            # their spreads): the trigger interval takes their place
            "framestream": grid(ranks=[two], threads=[1], max_batch=[20, 256],
                                chunk_frames=[256], credits=[2], max_offsets=[20000],
                                trigger_s=TRIGGERS),
            "ray_actors": grid(workers=[two], threads=[1], batch=polls),
            "spark_udf": grid(workers=[two], threads=[1], batch=[256, 1024],
                              arrow_batch=[2048, 10000], min_partitions=[4],
                              max_offsets=[20000], trigger_s=TRIGGERS),
            "noframe": grid(workers=[1], threads=[1, two], batch=polls),
        }
    return {
        "framestream": grid(ranks=[two, 2 * two], threads=[1], max_batch=[20, 64, 256, 1024],
                            chunk_frames=[256, 1024], credits=[2, 4], max_offsets=[20000],
                            trigger_s=TRIGGERS),
        "ray_actors": grid(workers=[two], threads=[1], batch=polls),
        "spark_udf": grid(workers=[two], threads=[1], batch=[256, 1024],
                          arrow_batch=[2048, 10000], min_partitions=[4, 8],
                          max_offsets=[5000, 20000], trigger_s=TRIGGERS),
        "noframe": grid(workers=[1], threads=[1, two], batch=polls),
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


def start(lane: str, setting: dict[str, Any], ctx: Context, tag: str) -> Lane:
    """``lane`` started at ``setting`` on fresh topics; its start-up time in ``startup_s``."""
    name, runtime = split(lane)
    slug = lane.replace("@", "-")
    topics = {k: kafka_io.topic_names(ctx.run_id, slug, tag, k) for k in ("in", "out", "dlq")}
    kafka_io.make_topics(ctx.bootstrap, list(topics.values()), ctx.partitions)
    work = ctx.work / f"{slug}-{tag}"
    pipeline: Any
    try:
        if name == "framestream":
            pipeline = Framestream(topics["in"], topics["out"], topics["dlq"], ctx.version, work,
                                   setting["chunk_frames"], setting["credits"],
                                   setting.get("trigger_s", ctx.trigger_s),
                                   setting["max_offsets"], ctx.registry)
            ranks_s = pipeline.ranks.start(setting["ranks"], setting["max_batch"],
                                           setting["threads"], ctx.version, device=ctx.device,
                                           registry=ctx.registry, runtime=runtime)
            spark_s = pipeline.start()
            pipeline.startup_s = ranks_s + spark_s  # ranks up, then spark-submit to the query
        elif name in PIPELINES:
            own = {k: v for k, v in setting.items() if k != "trigger_s"}
            extra = ["--trigger-interval", str(setting.get("trigger_s", ctx.trigger_s)),
                     "--checkpoint", str(work / "checkpoint")] if name == "spark_udf" else []
            args = ["--set", ctx.fs.name, "--topic-in", topics["in"], "--topic-out",
                    topics["out"], "--bootstrap", ctx.bootstrap, "--version", ctx.version,
                    *(["--registry", ctx.registry] if ctx.registry else []), *peer_args(own),
                    "--runtime", runtime, *extra]
            pipeline = Peer(name, f"bench.peers.{name}", args, work)
            pipeline.start()
        else:
            raise AssertionError(name)  # split() checked it
    except BaseException:
        kafka_io.drop_topics(ctx.bootstrap, list(topics.values()))
        raise
    log.info("%s up at %s in %.1f s", lane, setting, pipeline.startup_s)
    up = Lane(lane, ctx.fs, pipeline, topics["in"], kafka_io.Outputs(ctx.bootstrap, topics["out"]))
    up.topics = list(topics.values())
    return up


def runtime_served(lane: Lane) -> str:
    """The model step a lane ran: a framestream lane's from its ranks' log (a parity fallback
    shows there), a peer's as asked (a peer asked for ONNX Runtime fails to start without it)."""
    name, runtime = split(lane.name)
    if name == "framestream":
        return lane.pipeline.ranks.runtime_served()
    return runtime


def stop(lane: Lane, bootstrap: str) -> None:
    try:
        lane.pipeline.stop()
    except Exception as exc:  # keep stopping: the topics and the other lanes must go too
        log.error("stopping %s: %s", lane.name, exc)
    if lane.outputs is not None:
        lane.outputs.close()
    kafka_io.drop_topics(bootstrap, lane.topics)
