"""framestream end to end against its ceilings and its peers, in one run on the same frames.

    python -m bench.stream --quick            # the profile `make bench` runs (~10 min, 2 cores)
    python -m bench.stream                    # the full grids (ranks 1,2,4 x batch 1..256, both sets)
    python -m bench.stream --device cuda --ranks 1,2,4,8,12   # a GPU machine: ranks share the GPU

Phases (``--phases``, default all): ``ceilings`` (model-only, decode-only, transport-only),
``grid`` (Kafka -> Spark -> ZeroMQ -> ranks -> Kafka over ranks x max batch: the Kafka + Ray
paper's experiment), ``peers`` (framestream at its best cell beside Spark's predict_batch_udf, Ray
actors with kafka-python, and one plain Python process, interleaved repeats), ``latency``
(producer paced at fractions of the best measured frames/s), ``breakdown`` (where the CPU goes in
one burst). Writes ``bench/results/stream-<timestamp>.json`` and its PNGs; ``python -m
bench.report`` puts them in the README.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from bench import kafka_io, phases, plots
from bench.breakdown import Profile, broker_pids, summarize
from bench.ceilings import CORES, measure, threads_for
from bench.common import GPU_PENDING, Run, loadavg, ratio, setup_logging
from bench.frameset import frame_set
from bench.pipelines import Framestream, Peer
from framestream.config import KafkaSettings

log = logging.getLogger(__name__)
PHASES = ("ceilings", "grid", "peers", "latency", "breakdown")
QUICK = {"ranks": "1,2,4", "batches": "1,20,256", "imagenet_ranks": "1,2",
         "imagenet_batches": "1,20", "frames": {"fashion": 8000, "imagenet": 128},
         "warmup_frames": {"fashion": 500, "imagenet": 16}, "repeats": 1, "peer_repeats": 2,
         "peer_sets": "fashion", "latency_s": 15.0, "ceiling_s": 2.0, "burst_s": 4.0}
FULL = {"ranks": "1,2,4", "batches": "1,5,10,20,64,256", "imagenet_ranks": "1,2,4",
        "imagenet_batches": "1,5,10,20,64,256", "frames": {"fashion": 30000, "imagenet": 400},
        "warmup_frames": {"fashion": 2000, "imagenet": 32}, "repeats": 3, "peer_repeats": 3,
        "peer_sets": "fashion,imagenet", "latency_s": 60.0, "ceiling_s": 5.0, "burst_s": 15.0}


def parse(argv: list[str] | None) -> tuple[argparse.Namespace, dict[str, Any]]:
    p = argparse.ArgumentParser(prog="python -m bench.stream", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="the `make bench` profile")
    p.add_argument("--sets", default="fashion,imagenet", help="frame sets (fashion, imagenet)")
    p.add_argument("--phases", default=",".join(PHASES))
    p.add_argument("--ranks", help="fashion grid ranks (quick 1,2,4; full 1,2,4)")
    p.add_argument("--batches", help="fashion grid max batch (quick 1,20,256; full 1,5,...,256)")
    p.add_argument("--imagenet-ranks")
    p.add_argument("--imagenet-batches")
    p.add_argument("--frames", type=int, help="frames per measured burst (fashion)")
    p.add_argument("--repeats", type=int, help="measured bursts per grid cell")
    p.add_argument("--peer-sets", help="frame sets the peers run on")
    p.add_argument("--loads", default="0.25,0.5,0.75", help="latency: fractions of max frames/s")
    p.add_argument("--latency-seconds", type=float)
    p.add_argument("--chunk-frames", type=int, default=256)
    p.add_argument("--credits", type=int, default=2)
    p.add_argument("--trigger-interval", type=float, default=0.5)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    a = p.parse_args(argv)
    prof = dict(QUICK if a.quick else FULL)
    for key in ("ranks", "batches", "imagenet_ranks", "imagenet_batches", "peer_sets"):
        if getattr(a, key):
            prof[key] = getattr(a, key)
    if a.frames:
        prof["frames"] = {**prof["frames"], "fashion": a.frames}
    if a.repeats:
        prof["repeats"] = prof["peer_repeats"] = a.repeats
    if a.latency_seconds:
        prof["latency_s"] = a.latency_seconds
    ints = lambda s: [int(x) for x in s.split(",")]  # noqa: E731
    params = {
        "sets": a.sets.split(","), "phases": a.phases.split(","),
        "grid": {"fashion": {"ranks": ints(prof["ranks"]), "batches": ints(prof["batches"])},
                 "imagenet": {"ranks": ints(prof["imagenet_ranks"]),
                              "batches": ints(prof["imagenet_batches"])}},
        "frames": prof["frames"], "warmup_frames": prof["warmup_frames"],
        "repeats": prof["repeats"], "peer_repeats": prof["peer_repeats"],
        "peer_sets": prof["peer_sets"].split(","), "loads": [float(x) for x in a.loads.split(",")],
        "latency_s": prof["latency_s"], "ceiling_s": prof["ceiling_s"],
        "burst_s": prof["burst_s"],
        "chunk_frames": a.chunk_frames, "credits": a.credits, "trigger_s": a.trigger_interval,
        "device": a.device, "cores": CORES, "torch_threads": "max(1, cores // processes) per "
        "rank / model-only process; 1 per peer worker process (2 for the one-process peer)",
        "throughput": "backlog bursts: the pipeline is paused (SIGSTOP) while the burst is "
                      "published, every other pipeline stays paused; frames/s from resume to the "
                      "last prediction's Kafka timestamp",
        "warmup": "one ungated burst per pipeline and per grid cell before measuring, excluded",
    }
    return a, params


def run_set(run: Run, bench: phases.Bench, set_name: str, kafka: KafkaSettings) -> dict[str, Any]:
    p = run.params
    fs = frame_set(set_name)
    rid = kafka_io.new_run_id()
    names = {k: kafka_io.topic_names(rid, set_name, k) for k in ("fs-in", "fs-out", "fs-dlq")}
    peers = ("spark_udf", "ray_actors", "noframe") if set_name in p["peer_sets"] and \
        "peers" in p["phases"] else ()
    for peer in peers:
        names[f"{peer}-in"] = kafka_io.topic_names(rid, set_name, peer, "in")
        names[f"{peer}-out"] = kafka_io.topic_names(rid, set_name, peer, "out")
    kafka_io.make_topics(kafka.bootstrap, list(names.values()))
    res: dict[str, Any] = {"frame_bytes_mean": round(fs.mean_bytes), "frames_in_set": len(fs.values),
                           "net": fs.net}
    work = run.scratch(set_name)
    fsp = Framestream(names["fs-in"], names["fs-out"], names["fs-dlq"], fs.version, work,
                      p["chunk_frames"], p["credits"], p["trigger_s"])
    lanes: list[phases.Lane] = []
    try:
        grid = p["grid"][set_name]
        ranks_s = fsp.ranks.start(grid["ranks"][0], grid["batches"][-1],
                                  threads_for(grid["ranks"][0]), fs.version, device=p["device"])
        spark_s = fsp.start()
        fsp.startup_s = ranks_s + spark_s  # mpirun ranks up, then spark-submit up to the query
        res["framestream_startup_s"] = {"ranks": round(ranks_s, 2), "spark": round(spark_s, 2)}
        lane = phases.Lane("framestream", fs, fsp, names["fs-in"],
                           kafka_io.Outputs(kafka.bootstrap, names["fs-out"]))
        lanes.append(lane)
        bench.lanes = lanes
        if "grid" in p["phases"]:
            res["grid"] = phases.grid(bench, lane, grid["ranks"], grid["batches"], p["device"])
            best = res["grid"]["best"]
        else:
            best = {"ranks": 2, "threads": 1, "max_batch": 256}
        if any(ph in p["phases"] for ph in ("peers", "latency", "breakdown")):
            fsp.ranks.start(best["ranks"], best["max_batch"], best["threads"], fs.version,
                            device=p["device"])
        if peers:
            b = best["max_batch"]
            specs = {"spark_udf": ["--workers", str(CORES), "--threads", "1",
                                   "--trigger-interval", str(p["trigger_s"])],
                     "ray_actors": ["--workers", str(CORES), "--threads", "1"],
                     "noframe": ["--workers", "1", "--threads", str(CORES)]}
            for peer in peers:
                args = ["--set", set_name, "--topic-in", names[f"{peer}-in"], "--topic-out",
                        names[f"{peer}-out"], "--batch", str(b), *specs[peer]]
                pp = Peer(peer, f"bench.peers.{peer}", args, work)
                lanes.append(phases.Lane(peer, fs, pp, names[f"{peer}-in"], None))  # type: ignore[arg-type]
                for other in lanes[:-1]:
                    other.pipeline.pause()  # start-up is timed with the machine to itself
                try:
                    pp.start()
                finally:
                    for other in lanes[:-1]:
                        other.pipeline.resume()
                lanes[-1].outputs = kafka_io.Outputs(kafka.bootstrap, names[f"{peer}-out"])
            res["peers"] = phases.compare(bench, lanes)
            res["peers_config"] = {"batch": b, "framestream": best, "spark_udf": specs["spark_udf"],
                                   "ray_actors": specs["ray_actors"], "noframe": specs["noframe"]}
            for peer_lane in lanes[1:]:
                peer_lane.pipeline.stop()
            lanes[1:] = []
        if "latency" in p["phases"] and set_name == p["sets"][0]:
            top = (res.get("peers", {}).get("framestream", {}).get("frames_per_s")
                   or best.get("frames_per_s")
                   or bench.burst(lane, p["frames"][set_name])["frames_per_s"])
            res["latency"] = {"max_frames_per_s": top, "config": best,
                              "loads": phases.latency(bench, lane, top, p["loads"], p["latency_s"])}
        if "breakdown" in p["phases"] and set_name == p["sets"][0]:
            res["breakdown"] = breakdown(bench, lane, work, p["frames"][set_name])
            res["breakdown"]["config"] = best
    finally:
        for ln in lanes:
            try:
                ln.pipeline.stop()
            except Exception as exc:  # keep stopping the others
                log.error("stopping %s: %s", ln.name, exc)
            if ln.outputs is not None:
                ln.outputs.close()
        fsp.stop()
        kafka_io.drop_topics(kafka.bootstrap, list(names.values()))
    return res


def breakdown(bench: phases.Bench, lane: phases.Lane, work: Any, count: int) -> dict[str, Any]:
    bench.warm(lane, bench.params["warmup_frames"][lane.fs.name])
    roles = lane.pipeline.pids()
    roles["broker"] = broker_pids()
    roles["bench"] = [os.getpid()]
    profile = Profile(roles, work)

    class Gate:
        def pause(self) -> None:
            lane.pipeline.pause()

        def resume(self) -> None:
            profile.start()
            lane.pipeline.resume()

    sample = kafka_io.burst(bench.pub, lane.fs, lane.topic_in, lane.outputs, count,
                            alive=lane.pipeline.alive, start=lane.offset, gate=Gate(),
                            on_done=profile.stop)
    lane.offset += count
    return {"sample": sample, **summarize(profile, count, CORES)}


def targets(res: dict[str, Any]) -> dict[str, Any]:
    """The issue's goals, reported (never asserted)."""
    out: dict[str, Any] = {}
    for set_name, r in res.get("sets", {}).items():
        ceil = res.get("ceilings", {}).get(set_name, {})
        best = max([x for x in (r.get("grid", {}).get("best", {}).get("frames_per_s"),
                                r.get("peers", {}).get("framestream", {}).get("frames_per_s"))
                    if x is not None], default=None)
        t: dict[str, Any] = {"e2e_best": best, "limit": ceil.get("limit"),
                             "e2e_over_limit": ratio(best, ceil.get("limit")), "goal": 0.8}
        peers = r.get("peers")
        if peers:
            fs_fps = peers["framestream"]["frames_per_s"]
            for name in ("spark_udf", "ray_actors", "noframe"):
                t[f"over_{name}"] = ratio(fs_fps, peers.get(name, {}).get("frames_per_s"))
            t["goal_over_spark_udf"] = 1.2
        lat = r.get("latency")
        if lat:
            half = next((x for x in lat["loads"] if abs(x["load"] - 0.5) < 1e-9), None)
            t["p99_at_50pct_s"] = half and half["latency_p99_s"]
            t["goal_p99_s"] = 1.0
        out[set_name] = t
    return out


def main(argv: list[str] | None = None) -> int:
    a, params = parse(argv)
    setup_logging()
    run = Run("stream", params, "quick" if a.quick else "full")
    kafka = KafkaSettings.load()
    bench = phases.Bench(None, params)  # type: ignore[arg-type]  # a publisher per set
    run.results = {"sets": {}, "gpu": run.machine["gpu"].get("grid", "measured") if
                   not run.machine["gpu"].get("available") else "measured"}
    if not run.machine["gpu"].get("available"):
        run.notes.append(f"GPU grid {GPU_PENDING}")
    try:
        if "ceilings" in params["phases"]:
            g = params["grid"]
            ranks = sorted({r for s in params["sets"] for r in g[s]["ranks"]})
            run.results["ceilings"] = {}
            for s in params["sets"]:
                run.results["ceilings"].update(measure(
                    [s], g[s]["ranks"], g[s]["batches"], params["ceiling_s"],
                    1 if a.quick else 3, params["chunk_frames"], params["credits"], a.device))
            log.info("ceilings done (ranks %s), load %s", ranks, loadavg())
        for s in params["sets"]:
            bench.pub = kafka_io.Publisher(kafka.bootstrap)  # forgets the last set's topics
            try:
                run.results["sets"][s] = run_set(run, bench, s, kafka)
            finally:
                bench.pub.close()
            run.save()  # keep what was measured if a later set fails
        run.results["targets"] = targets(run.results)
    finally:
        plots.stream_plots(run)
        run.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
