"""Spark's way to train: ``pyspark.ml.torch.distributor.TorchDistributor`` (local mode, N processes)
training the net ``jobs/retrain.py`` trains, with the same optimizer, schedule, batch per process,
sharding, seeds and holdout evaluation (``models.train_loop``), DDP over gloo.

    python -m bench.peers.torch_distributor --processes 2 --epochs 8 --out result.json

Writes one JSON object: the per-epoch history (holdout accuracy, seconds since training started),
``time_to_target_s``, ``train_s`` and ``wall_s`` (the whole run, Spark session included).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any


def train_fn(cfg: dict[str, Any]) -> dict[str, Any]:
    """Runs in each process torchrun starts (TorchDistributor sets the rendezvous variables)."""
    import numpy as np
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    from torch.nn.parallel import DistributedDataParallel

    from framestream import fashion_mnist
    from models import train_loop as tl
    from models.nets import DEFAULT_SPECS, build

    dist.init_process_group("gloo")
    rank, size = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(cfg["threads"])
    spec = DEFAULT_SPECS["fashion_cnn"]
    images, labels = fashion_mnist.load("train")
    n = min(cfg["max_train"] or len(images), len(images))
    hold_x, hold_y = fashion_mnist.load("test")
    torch.manual_seed(cfg["seed"])
    model = DistributedDataParallel(tl.for_training(build("fashion_cnn")))
    steps = tl.steps_per_epoch(n, size, cfg["batch_size"])
    optimizer = tl.make_optimizer("adam", model, cfg["lr"])
    scheduler = tl.make_scheduler(optimizer, cfg["lr"], steps * cfg["epochs"])
    history = []
    started = time.perf_counter()
    for epoch in range(cfg["epochs"]):
        torch.manual_seed(cfg["seed"] * 1_000_003 + epoch * 1009 + rank)
        model.train()
        loss_sum = 0.0
        for part in tl.batches(tl.shard_indices(n, rank, size, cfg["seed"], epoch),
                               cfg["batch_size"]):
            x = tl.inputs(tl.frames_of(images, part), spec)
            y = torch.from_numpy(labels[part].astype(np.int64))
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += float(loss.detach())
        mine = np.arange(rank, len(hold_x), size)
        correct, _, count = tl.evaluate(model.module, hold_x, hold_y, spec, mine)
        totals = torch.tensor([correct, count, loss_sum, steps], dtype=torch.float64)
        dist.all_reduce(totals)
        history.append({"epoch": epoch + 1, "holdout_accuracy": float(totals[0] / totals[1]),
                        "train_loss": float(totals[2] / totals[3]),
                        "elapsed_s": time.perf_counter() - started})
    dist.destroy_process_group()
    # Every process returns it: TorchDistributor's local mode keeps whichever process wrote its
    # output file last, and the history is the same on all (reduced above).
    return {"history": history, "world_size": size}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.peers.torch_distributor", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=128, help="per process (jobs/retrain.py's)")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-train", type=int, default=0)
    p.add_argument("--target", type=float, default=0.92)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    wall0 = time.perf_counter()
    from pyspark.ml.torch.distributor import TorchDistributor

    from etl.session import SparkSettings, spark_session

    spark = spark_session(SparkSettings.load(ui=False, app_name="bench-torch-distributor",
                                             master=f"local[{a.processes}]"))
    cfg = {"threads": a.threads, "epochs": a.epochs, "batch_size": a.batch_size, "lr": a.lr,
           "seed": a.seed, "max_train": a.max_train}
    result = TorchDistributor(num_processes=a.processes, local_mode=True,
                              use_gpu=False).run(train_fn, cfg)
    spark.stop()
    hist = result["history"]
    reached = [h["elapsed_s"] for h in hist if h["holdout_accuracy"] >= a.target]
    out = {"backend": "TorchDistributor (DDP, gloo)", "world_size": result["world_size"],
           "threads_per_rank": a.threads, "epochs": len(hist), "history": hist,
           "holdout_accuracy": hist[-1]["holdout_accuracy"], "train_s": hist[-1]["elapsed_s"],
           "target": a.target, "time_to_target_s": round(reached[0], 2) if reached else None,
           "wall_s": round(time.perf_counter() - wall0, 2)}
    Path(a.out).write_text(json.dumps(out))
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
