"""Retraining: time to a Fashion-MNIST test accuracy for framestream's MPI ranks and for Spark's
TorchDistributor, training the same net with the same optimizer, schedule and batch per process.

    python -m bench.retrain --quick     # `make bench`: a 15,000-image subset, 3 epochs, target 0.85
    python -m bench.retrain             # the issue's: full train split, 8 epochs, target 0.92

Runs (interleaved when ``--repeats`` > 1): ``mpirun -n 1 python jobs/retrain.py --backend torch``
(2 threads), ``mpirun -n 2 ... --backend torch`` and ``--backend horovod`` (1 thread per rank),
``python -m bench.peers.torch_distributor --processes 2`` (1 thread per process). The time to the
target is the training clock at the end of the first epoch whose holdout accuracy reaches it
(start-up and data loading excluded, reported as wall).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import Run, median, setup_logging
from bench.plots import retrain_plot
from framestream.paths import REPO
from launcher.errors import RankFailed
from launcher.mpirun import run_mpi

log = logging.getLogger(__name__)
DIST_KERAS = {"source": "Dist-Keras (CERN), MNIST, Spark workers",
              "one_worker": {"seconds": 1572, "accuracy": 0.9878},
              "three_workers": {"seconds": 1497.9, "accuracy": 0.9897},
              "note": "historical reference: a different dataset (MNIST), model and machine"}


def horovod_built() -> bool:
    try:
        import horovod.torch  # noqa: F401
    except Exception:  # not built, or built against another torch: the run is skipped
        return False
    return True


def run_mpi_job(name: str, ranks: int, backend: str, common: list[str], work: Path) -> dict[str, Any]:
    from models.train_loop import checkpoint_from_bytes

    slug = f"n{ranks}-{backend}"  # folder names without the display name's spaces
    ckpt = work / f"ckpt-{slug}"
    args = ["--backend", backend, "--no-progress", "--no-promote", "--registry",
            str(work / f"registry-{slug}"), "--checkpoint-dir", str(ckpt), *common]
    t0 = time.perf_counter()
    try:  # the launcher's one way to start ranks; rank 0's result file is the result
        out = run_mpi(ranks, "jobs.retrain", args, timeout=3600, oversubscribe=True, cwd=REPO)
    except RankFailed as exc:
        raise RuntimeError(f"mpirun -n {ranks} python -m jobs.retrain failed: {exc}") from exc
    wall = time.perf_counter() - t0
    if out.result is None:
        raise RuntimeError(f"mpirun -n {ranks} jobs.retrain wrote no result file:\n"
                           f"{out.stderr[-3000:]}")
    res = out.result
    history = checkpoint_from_bytes((ckpt / "last.pt").read_bytes())["history"]
    return {"name": name, "command": f"mpirun -n {ranks} " + shlex.join(["python",
                                                                       "jobs/retrain.py", *args]),
            **{k: res.get(k) for k in ("backend", "world_size", "threads_per_rank", "epochs",
                                       "holdout_accuracy", "train_s", "time_to_target_s")},
            "wall_s": round(wall, 2), "history": history}


def run_distributor(common: dict[str, Any], work: Path) -> dict[str, Any]:
    out_file = work / "torch-distributor.json"
    args = ["--processes", "2", "--threads", "1", "--epochs", str(common["epochs"]),
            "--target", str(common["target"]), "--max-train", str(common["max_train"]),
            "--out", str(out_file)]
    cmd = [sys.executable, "-m", "bench.peers.torch_distributor", *args]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO), "PYSPARK_PYTHON": sys.executable})
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"TorchDistributor run failed ({out.returncode}):\n{out.stderr[-3000:]}")
    res = json.loads(out_file.read_text())
    command = shlex.join(["python", "-m", "bench.peers.torch_distributor", *args[:-2]])
    return {"name": "TorchDistributor -n 2", "command": command,
            **{k: v for k, v in res.items() if k != "wall_s"}, "wall_s": round(wall, 2)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.retrain", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--epochs", type=int)
    p.add_argument("--target", type=float)
    p.add_argument("--max-train", type=int, help="0 = the whole train split")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--runs", default="n1,n2,horovod,distributor",
                   help="which of n1, n2, horovod, distributor")
    a = p.parse_args(argv)
    setup_logging()
    common = {"epochs": a.epochs or (3 if a.quick else 8),
              "target": a.target or (0.85 if a.quick else 0.92),
              "max_train": a.max_train if a.max_train is not None else (15000 if a.quick else 0),
              "batch_size_per_rank": 128, "optimizer": "adam, one-cycle to lr 3e-3",
              "net": "fashion_cnn (seed 0)", "holdout": "Fashion-MNIST test split (10,000)"}
    runs = a.runs.split(",")
    run = Run("retrain", {**common, "runs": runs, "repeats": a.repeats}, "quick" if a.quick else "full")
    if "horovod" in runs and not horovod_built():
        runs.remove("horovod")
        run.notes.append("Horovod is not built here: its run was skipped (make setup builds it)")
    flags = ["--epochs", str(common["epochs"]), "--target", str(common["target"])]
    if common["max_train"]:
        flags += ["--max-train", str(common["max_train"])]
    work = run.scratch("retrain")
    samples: dict[str, list[dict[str, Any]]] = {}
    for rep in range(a.repeats):
        for name in runs:
            log.info("retrain %s (repeat %d)", name, rep)
            if name == "n1":
                r = run_mpi_job("mpirun -n 1 (torch)", 1, "torch", flags, work)
            elif name == "n2":
                r = run_mpi_job("mpirun -n 2 (torch)", 2, "torch", flags, work)
            elif name == "horovod":
                r = run_mpi_job("mpirun -n 2 (Horovod)", 2, "horovod", flags, work)
            else:
                r = run_distributor(common, work)
            log.info("%s: accuracy %.4f, time to %.2f %s s, wall %.0f s", r["name"],
                     r["holdout_accuracy"], common["target"], r["time_to_target_s"], r["wall_s"])
            samples.setdefault(r["name"], []).append(r)
    rows = []
    for name, rs in samples.items():
        rows.append({"name": name, "time_to_target_s": median(x["time_to_target_s"] for x in rs),
                     "holdout_accuracy": median(x["holdout_accuracy"] for x in rs),
                     "wall_s": median(x["wall_s"] for x in rs), "history": rs[-1]["history"],
                     "command": rs[-1]["command"], "samples": rs})
    run.results = {"runs": rows, "historical_reference": DIST_KERAS}
    n2 = next((r for r in rows if r["name"] == "mpirun -n 2 (torch)"), None)
    td = next((r for r in rows if r["name"].startswith("TorchDistributor")), None)
    if n2 and td:
        run.results["target_n2_sooner_than_distributor"] = (
            n2["time_to_target_s"] is not None and (td["time_to_target_s"] is None
                                                    or n2["time_to_target_s"] < td["time_to_target_s"]))
    retrain_plot(rows, run.png("time-to-accuracy"), common["target"])
    run.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
