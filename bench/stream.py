"""The fair bench: framestream against the pipelines a user would pick instead, each at its own
best, on the same frames, registry model and cores, checked frame by frame against the model.

    python -m bench.stream --profile smoke    # ~500 frames, 2 rounds: proves the code (minutes)
    python -m bench.stream --profile quick    # what `make bench` runs: 5 rounds, small sweeps
    python -m bench.stream --profile full     # 7 rounds, wider sweeps, latency and breakdown

Steps: a trained registry model (reused when the registry serves one; else ``mpirun -n 2
jobs/retrain.py``); the model alone on the decoded frames (the reference classes, near-ties
counted apart); per pipeline a sweep of its own settings (each point: restart, warm-up, bursts;
the best median wins); then every pipeline started once at its chosen setting, warmed alike, and
``rounds`` interleaved rounds in a seeded random order. Frames are spread over every partition.
Timing and warm-up are defined in :mod:`bench.fair` and written into the JSON's ``params``.
Writes ``bench/results/fair-<timestamp>.json`` and its PNGs; ``python -m bench.report`` renders
the README's Performance section from the newest such file.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Any

import numpy as np

from bench import fair, kafka_io, lineup, phases, plots
from bench.ceilings import CORES
from bench.common import Run, loadavg, ratio, setup_logging
from bench.frameset import frame_set, model
from framestream.config import KafkaSettings

log = logging.getLogger(__name__)
PROFILES: dict[str, dict[str, Any]] = {
    "smoke": {"frames": 500, "warmup_frames": 200, "rounds": 2, "sweep_bursts": 1,
              "phases": "fair", "latency_s": 10.0, "ceiling_s": 1.0, "burst_s": 3.0},
    "quick": {"frames": 8000, "warmup_frames": 1000, "rounds": 5, "sweep_bursts": 2,
              "phases": "fair,latency,breakdown", "latency_s": 15.0, "ceiling_s": 2.0,
              "burst_s": 4.0},
    "full": {"frames": 20000, "warmup_frames": 2000, "rounds": 7, "sweep_bursts": 3,
             "phases": "fair,ceilings,latency,breakdown", "latency_s": 60.0, "ceiling_s": 5.0,
             "burst_s": 15.0},
}


def parse(argv: list[str] | None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m bench.stream", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="quick", choices=sorted(PROFILES))
    p.add_argument("--pipelines", default=",".join(lineup.LANES),
                   help="lanes: a pipeline as its users run it (e.g. ray_actors) or at another "
                        "model step (ray_actors@onnxruntime, framestream@eager)")
    p.add_argument("--phases", help="fair plus any of ceilings, latency, breakdown")
    p.add_argument("--frames", type=int, help="frames per timed burst")
    p.add_argument("--warmup-frames", type=int, help="frames of the untimed warm-up burst")
    p.add_argument("--rounds", type=int, help="interleaved rounds (>= 5 outside smoke)")
    p.add_argument("--seed", type=int, default=0, help="seeds the rounds' random order")
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--loads", default="0.25,0.5,0.75", help="latency: fractions of max frames/s")
    p.add_argument("--trigger-interval", type=float, default=0.5)
    p.add_argument("--registry", help="registry root (default: the state dir's)")
    p.add_argument("--train-epochs", type=int, default=2,
                   help="epochs of the first version when the registry serves none")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    a = p.parse_args(argv)
    prof = PROFILES[a.profile]
    params = {
        "profile": a.profile, "set": "fashion", "pipelines": a.pipelines.split(","),
        "phases": (a.phases or prof["phases"]).split(","),
        "frames": a.frames or prof["frames"],
        "warmup_frames": a.warmup_frames or prof["warmup_frames"],
        "rounds": a.rounds or prof["rounds"], "sweep_bursts": prof["sweep_bursts"],
        "seed": a.seed, "partitions": a.partitions,
        "loads": [float(x) for x in a.loads.split(",")], "latency_s": prof["latency_s"],
        "ceiling_s": prof["ceiling_s"], "burst_s": prof["burst_s"],
        "trigger_s": a.trigger_interval, "registry": a.registry, "train_epochs": a.train_epochs,
        "device": a.device, "cores": CORES, "near_tie": fair.NEAR_TIE,
        "sweeps": lineup.sweeps(a.profile, CORES),
        "timing": fair.TIMING, "warmup": fair.WARMUP,
        "choice": "each pipeline runs at the sweep point with the best median frames/s",
    }
    for lane in params["pipelines"]:
        try:
            lineup.split(lane)
        except ValueError as exc:
            p.error(f"--pipelines: {exc}")
    return params


def sweep_points(params: dict[str, Any], chosen: dict[str, Any], lane: str) -> list[dict[str, Any]]:
    """The lane's pipeline's own sweep, or for a lane at another runtime than shipped whose
    shipped lane was swept first, that lane's choice with the batch axis swept again."""
    name, runtime = lineup.split(lane)
    if runtime != lineup.SHIPPED[name] and name in chosen:
        return lineup.twin_points(lane, chosen[name], params["profile"], params["cores"])
    return params["sweeps"][name]


def trained_version(registry: str | None, epochs: int) -> dict[str, Any]:
    """The registry's serving version (trained here with ``mpirun -n 2 jobs/retrain.py`` first
    when the registry serves none, as ``make demo`` does)."""
    from models.registry import Registry
    from jobs.first_version import ensure_first_version

    reg = Registry(registry)
    m = ensure_first_version(reg, ranks=2, epochs=epochs)
    return {"version": m.version, "net": m.net, "registry": str(reg.root),
            "holdout_accuracy": m.metrics.get("holdout_accuracy"), "sha256": m.sha256}


def model_alone(ctx: lineup.Context) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The reference: the same version run directly on every frame of the set, decoded by the
    stream's own ETL code. Returns (class per frame, near-tie flag per frame, summary)."""
    from etl.decode import decode_batch
    from mpi_workers.server_loop import forward

    m = model(ctx.fs.name, threads=CORES, version=ctx.version, registry=ctx.registry)
    decoded = decode_batch(list(ctx.fs.values), m.spec)
    if len(decoded.bad_index):
        raise RuntimeError(f"{len(decoded.bad_index)} frames of the set did not decode")
    t0 = time.perf_counter()
    probs = forward(m, decoded.images, 256)
    seconds = time.perf_counter() - t0
    classes, ties = fair.reference(probs)
    labels = np.asarray(ctx.fs.labels)
    return classes, ties, {
        "frames": len(classes), "near_ties": int(ties.sum()), "batch": 256, "threads": CORES,
        "accuracy": round(float((classes == labels).mean()), 5),
        "frames_per_s": round(len(classes) / seconds, 1)}


def sweep(bench: phases.Bench, ctx: lineup.Context, name: str,
          points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each setting of ``name``: start, warm up, ``sweep_bursts`` timed bursts, stop."""
    p = bench.params
    if len(points) == 1:
        return [{"setting": points[0], "frames_per_s": [], "note": "one point: not swept"}]
    out = []
    for k, setting in enumerate(points):
        lane = lineup.start(name, setting, ctx, f"s{k}")
        try:
            bench.lanes = [lane]
            warm = bench.warm(lane, p["warmup_frames"])
            samples = [bench.burst(lane, p["frames"]) for _ in range(p["sweep_bursts"])]
        finally:
            lineup.stop(lane, ctx.bootstrap)
        fps = [s["frames_per_s"] for s in samples]
        log.info("sweep %s %s: %s frames/s", name, setting, fps)
        out.append({"setting": setting, "frames_per_s": fps,
                    "startup_s": round(lane.pipeline.startup_s or 0, 2),
                    "warmup_frames_per_s": warm["frames_per_s"],
                    "check": [s["check"] for s in samples]})
    return out


def rounds(bench: phases.Bench, ctx: lineup.Context, chosen: dict[str, dict[str, Any]],
           res: dict[str, Any], run: Run) -> None:
    """Every pipeline up at its chosen setting, warmed alike, then the interleaved rounds."""
    p = bench.params
    names = list(chosen)
    lanes: dict[str, phases.Lane] = {}
    try:
        for name in names:
            for other in lanes.values():
                other.pipeline.pause()  # start-up is timed with the machine to itself
            try:
                lanes[name] = lineup.start(name, chosen[name], ctx, "rounds")
            finally:
                for other in lanes.values():
                    other.pipeline.resume()
        bench.lanes = list(lanes.values())
        warm = {n: bench.warm(lanes[n], p["warmup_frames"]) for n in names}
        orders = fair.round_orders(names, p["rounds"], p["seed"])
        res["round_orders"] = orders
        samples: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
        for r, order in enumerate(orders):
            for name in order:
                s = bench.burst(lanes[name], p["frames"])
                samples[name].append({"round": r, **s})
                log.info("round %d %s: %s frames/s, check %s", r, name, s["frames_per_s"],
                         {k: s["check"][k] for k in ("agree", "disagree", "lost", "duplicates")})
        for name in names:
            res["pipelines"][name] = {
                "title": lineup.title(name), "runtime": lineup.split(name)[1],
                "runtime_served": lineup.runtime_served(lanes[name]), "setting": chosen[name],
                "startup_s": round(lanes[name].pipeline.startup_s or 0, 2),
                "warmup": {k: warm[name][k] for k in ("count", "seconds", "frames_per_s")},
                "sweep": res["sweeps"][name], **fair.aggregate(samples[name])}
        run.save()
        fs_lane = lanes.get("framestream")
        top = res["pipelines"].get("framestream", {}).get("frames_per_s", {}).get("median")
        if fs_lane is not None and top and "latency" in p["phases"]:
            res["latency"] = {"max_frames_per_s": top, "config": chosen["framestream"],
                              "loads": phases.latency(bench, fs_lane, top, p["loads"],
                                                      p["latency_s"])}
        if fs_lane is not None and top and "breakdown" in p["phases"]:
            count = int(min(p["frames"], max(p["warmup_frames"], 2 * top * p["burst_s"])))
            res["breakdown"] = phases.breakdown(bench, fs_lane, ctx.work / "breakdown", count,
                                                CORES)
            res["breakdown"]["config"] = chosen["framestream"]
    finally:
        for lane in lanes.values():
            lineup.stop(lane, ctx.bootstrap)


def _best_peer(pipes: dict[str, Any], runtime: str) -> tuple[str | None, float | None]:
    """The fastest peer lane (median) running ``runtime``."""
    peers = [(v["frames_per_s"]["median"], lane) for lane, v in pipes.items()
             if lineup.split(lane)[0] != "framestream" and lineup.split(lane)[1] == runtime
             and v["frames_per_s"]["median"] is not None]
    if not peers:
        return None, None
    fps, lane = max(peers)
    return lane, fps


def targets(res: dict[str, Any]) -> dict[str, Any]:
    """framestream's median over each peer's median, and the issue's three comparisons
    (reported, never asserted): as shipped against the best peer as its users run it (eager),
    then framestream against the best peer at the same runtime, eager and ONNX Runtime."""
    pipes = res.get("pipelines", {})

    def med(lane: str) -> float | None:
        return pipes.get(lane, {}).get("frames_per_s", {}).get("median")
    fs = med("framestream")
    out: dict[str, Any] = {f"over_{n}": ratio(fs, v["frames_per_s"]["median"])
                           for n, v in pipes.items() if n != "framestream"}
    fs_runtime = pipes.get("framestream", {}).get("runtime_served")
    for key, mine, runtime, goal in (
            ("as_shipped", "framestream", "eager", 2.5),
            ("same_runtime_eager", "framestream@eager", "eager", 1.0),
            ("same_runtime_onnxruntime", "framestream", "onnxruntime", 1.0)):
        peer, peer_fps = _best_peer(pipes, runtime)
        out[key] = {"framestream": mine, "best_peer": peer, "ratio": ratio(med(mine), peer_fps),
                    "goal": goal}
    out["framestream_runtime_served"] = fs_runtime
    out["goal_as_shipped_over_best_peer"] = 2.5
    out["every_frame_agrees"] = all(v["disagree"] == 0 and v["lost"] == 0 and
                                    v["duplicates"] == 0 for v in pipes.values()) if pipes else None
    return out


def main(argv: list[str] | None = None) -> int:
    params = parse(argv)
    setup_logging()
    run = Run("fair", params, params["profile"])
    kafka = KafkaSettings.load()
    run.results = {"model": trained_version(params["registry"], params["train_epochs"]),
                   "sweeps": {}, "chosen": {}, "pipelines": {}}
    ctx = lineup.Context(frame_set(params["set"]), run.results["model"]["version"],
                         run.results["model"]["registry"], kafka.bootstrap,
                         kafka_io.new_run_id(), run.scratch("fair"), params["partitions"],
                         params["trigger_s"], params["device"])
    classes, ties, run.results["model_alone"] = model_alone(ctx)
    pub = kafka_io.Publisher(kafka.bootstrap, params["partitions"])
    params["partition_keys"] = pub.keys
    bench = phases.Bench(pub, params,
                         check=lambda recs, n: fair.agreement(fair.parse(recs), pub.run, n,
                                                              classes, ties))
    try:
        if "ceilings" in params["phases"]:
            from bench.ceilings import measure

            run.results["ceilings"] = measure([params["set"]], [CORES], [256],
                                              params["ceiling_s"], 1, 256, 2, params["device"])
        # shipped lanes first: a lane at another runtime re-sweeps only the batch axis around
        # its shipped lane's choice (see sweep_points)
        for name in sorted(params["pipelines"], key=lambda lane: "@" in lane):
            points = sweep_points(params, run.results["chosen"], name)
            run.results["sweeps"][name] = sweep(bench, ctx, name, points)
            run.results["chosen"][name] = fair.choose(run.results["sweeps"][name])
            run.save()  # keep what was measured if a later step fails
        rounds(bench, ctx, run.results["chosen"], run.results, run)
        run.results["targets"] = targets(run.results)
        log.info("done, load %s: %s", loadavg(), run.results["targets"])
    finally:
        pub.close()
        plots.stream_plots(run)
        run.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
