"""Data-parallel training under ``mpirun`` (``jobs/retrain.py``); rank 0 publishes a registry version.

Every rank builds the same net from the same seed, takes rank 0's weights (broadcast), trains on its
own shard of Fashion-MNIST's train split (one permutation per epoch, sliced by rank) and averages
gradients with the others every step through a :mod:`mpi_workers.backends` backend. Frames go
through the serving path's preprocessing (uint8 NHWC -> :func:`models.spec.normalize` with the
net's spec), with an optional flip/crop augmentation on the uint8 frames. After each epoch the
ranks evaluate the fixed holdout (Fashion-MNIST test split) in shards, and rank 0 checkpoints.
At the end rank 0 publishes a version and passes it through the registry's promotion gate.

A raising rank ends the whole job (:func:`mpi_workers.dist.abort_on_error`). No pickle between
ranks: the checkpoint travels as raw bytes in an MPI buffer and is read weights-only.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from framestream.errors import ConfigError
from framestream.flags import add_settings, dest, from_args
from framestream.run_files import write_result
from mpi_workers.dist import abort_on_error, world
from mpi_workers.train_publish import publish, warm_start
from mpi_workers.train_settings import HOLDOUT, RunOptions, TrainSettings

if TYPE_CHECKING:
    from mpi4py.MPI import Intracomm

log = logging.getLogger(__name__)
def parse_args(argv: list[str] | None = None) -> tuple[TrainSettings, RunOptions]:
    p = argparse.ArgumentParser(prog="mpirun -n N python jobs/retrain.py",
                                description="Data-parallel retraining; rank 0 publishes a version.")
    add_settings(p, TrainSettings, *TrainSettings.model_fields,
                 aliases={"timeout_s": "--timeout", "feed_timeout_s": "--feed-timeout"})
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument("--no-promote", dest="promote", action="store_false")
    p.add_argument("--warm-start", action="store_true",
                   help="start from the serving version's weights instead of random ones")
    p.add_argument("--stop-after", type=int, default=0,
                   help="stop after N epochs of this run (checkpoint kept, nothing published)")
    p.add_argument("--plot", type=Path, help="write loss/accuracy curves to this PNG")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    args = p.parse_args(argv)
    settings = from_args(args, TrainSettings)
    own = set(vars(args)) - {dest(TrainSettings, name) for name in TrainSettings.model_fields}
    opts = RunOptions(**{k: getattr(args, k) for k in own})
    return settings, opts


def _mpi_sum(comm: "Intracomm", values: list[float]) -> list[float]:
    from mpi4py import MPI

    buf = np.array(values, dtype=np.float64)
    comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
    return buf.tolist()


def _bcast_bytes(comm: "Intracomm", data: bytes | None) -> bytes | None:
    """Rank 0's bytes (or None) on every rank, as a raw MPI buffer."""
    size = np.array([-1 if data is None else len(data)], dtype=np.int64)
    comm.Bcast(size, root=0)
    if size[0] < 0:
        return None
    buf = np.frombuffer(data, dtype=np.uint8).copy() if comm.rank == 0 else np.empty(size[0], np.uint8)
    comm.Bcast(buf, root=0)
    return buf.tobytes()


def _local_ranks(comm: "Intracomm") -> int:
    env = os.environ.get("OMPI_COMM_WORLD_LOCAL_SIZE")
    if env:
        return int(env)
    from mpi4py import MPI

    return comm.Split_type(MPI.COMM_TYPE_SHARED).size


def _config(s: TrainSettings, world_size: int) -> dict[str, Any]:
    """What a checkpoint must agree on to be resumed (it fixes the data order and LR schedule)."""
    return {"net": s.net, "epochs": s.epochs, "batch_size": s.batch_size, "lr": s.lr,
            "optimizer": s.optimizer, "seed": s.seed, "max_train": s.max_train,
            "augment": s.augment, "world_size": world_size, "source": s.source,
            "data_range": s.data_range}


def _training_data(s: TrainSettings, comm: "Intracomm", spec: Any) -> tuple[Any, ...]:
    """(images, labels, samples in all, steps per epoch, epoch -> this rank's indices).

    fashion-mnist: every rank reads the IDX split and takes its shard of one permutation.
    zmq: every rank keeps what the Spark executors pushed to it (:mod:`mpi_workers.feed`);
    the step count is the largest rank's, smaller shares wrap around, so all ranks step together.
    """
    from framestream import fashion_mnist
    from models import train_loop as tl

    rank, size = comm.rank, comm.size
    if s.source == "fashion-mnist":
        images, labels = fashion_mnist.load("train")
        n = min(s.max_train or len(images), len(images))
        return (images, labels, n, tl.steps_per_epoch(n, size, s.batch_size),
                lambda epoch: tl.shard_indices(n, rank, size, s.seed, epoch))
    from mpi4py import MPI

    from mpi_workers import feed

    images, labels = feed.receive(comm, spec, s.feed_endpoints, idle_timeout_s=s.feed_timeout_s,
                                  max_frames=s.feed_max_frames)
    if s.max_train:
        images, labels = images[:s.max_train // size], labels[:s.max_train // size]
    mine = len(labels)
    least = comm.allreduce(mine, op=MPI.MIN)
    if least == 0:
        raise ValueError("a training rank received no labeled frames: feed more frames than "
                         "ranks (is the labels topic empty?)")
    steps = comm.allreduce(-(-mine // s.batch_size), op=MPI.MAX)
    n = comm.allreduce(mine, op=MPI.SUM)

    def local(epoch: int) -> np.ndarray:
        order = np.random.default_rng([s.seed, epoch, rank]).permutation(mine)
        return np.resize(order, steps * s.batch_size)  # wraps around to the common step count

    return images, labels, n, steps, local


def train(s: TrainSettings, opts: RunOptions) -> dict[str, Any] | None:
    """Run on every rank; rank 0 returns the result (the final JSON), the others None."""
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    from framestream import fashion_mnist
    from models import train_loop as tl
    from models.nets import DEFAULT_SPECS, build
    from mpi_workers.backends import select_backend

    started = time.perf_counter()
    comm = world()
    rank, size = comm.rank, comm.size
    device = torch.device(f"cuda:{int(os.environ.get('OMPI_COMM_WORLD_LOCAL_RANK', 0))}"
                          if torch.cuda.is_available() else "cpu")
    threads = s.threads or max(1, (os.cpu_count() or 1) // _local_ranks(comm))
    torch.set_num_threads(threads)
    spec = DEFAULT_SPECS[s.net]
    images, labels, n, steps, epoch_indices = _training_data(s, comm, spec)
    hold_x, hold_y = fashion_mnist.load("test")
    n_hold = min(s.holdout_limit or len(hold_x), len(hold_x))
    holdout = HOLDOUT if n_hold == len(hold_x) else f"{HOLDOUT}[:{n_hold}]"

    backend = select_backend(s.backend, comm, device, s.timeout_s)
    torch.manual_seed(s.seed)
    model = tl.for_training(build(s.net), device, backend.channels_last)
    parent = None
    if opts.warm_start and rank == 0:
        parent = warm_start(model, s)
    optimizer = backend.wrap_optimizer(tl.make_optimizer(s.optimizer, model, s.lr), model)
    scheduler = tl.make_scheduler(optimizer, s.lr, steps * s.epochs)
    config = _config(s, size)
    ckpt_path = s.checkpoint_dir / "last.pt"
    start_epoch, history, step_losses, published = 0, [], [], None
    if opts.resume:
        data = _bcast_bytes(comm, ckpt_path.read_bytes() if rank == 0 and ckpt_path.exists() else None)
        if data is None:
            if rank == 0:
                log.warning("--resume: no checkpoint at %s, starting from scratch", ckpt_path)
        else:
            state = tl.checkpoint_from_bytes(data)
            if state["config"] != config:
                raise ConfigError("--resume", str(ckpt_path), f"a run with the same settings "
                                  f"({state['config']}, this run {config}); start without --resume")
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            start_epoch, history = state["epoch"], state["history"]
            step_losses, parent = state["step_losses"], state["parent"] or None
            published = state.get("published") or None
            if rank == 0:
                log.info("resuming from %s after epoch %d/%d", ckpt_path, start_epoch, s.epochs)
    backend.broadcast_model(model)
    backend.broadcast_optimizer_state(optimizer)
    if rank == 0:
        log.info("training %s: %d ranks x %d threads, backend %s, %d samples, %d steps/epoch",
                 s.net, size, threads, backend.name, n, steps)

    resumed_from, stopped, train_started = start_epoch, False, time.perf_counter()
    prior_s = history[-1]["elapsed_s"] if history else 0.0
    for epoch in range(start_epoch, s.epochs):
        torch.manual_seed(s.seed * 1_000_003 + epoch * 1009 + rank)        # dropout
        gen = torch.Generator().manual_seed(s.seed * 1_000_033 + epoch * 919 + rank)
        model.train()
        local_loss, local_steps = 0.0, 0
        bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{s.epochs}", unit="step", file=sys.stderr,
                   disable=not (opts.progress and rank == 0), mininterval=1.0, dynamic_ncols=True)
        for part in tl.batches(epoch_indices(epoch), s.batch_size):
            x = tl.frames_of(images, part)
            if s.augment != "none":
                x = tl.augment(x, gen, pad=2 if s.augment == "flip-crop" else 0)
            x = tl.inputs(x, spec, device, backend.channels_last)
            y = torch.from_numpy(labels[part].astype(np.int64)).to(device)
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            backend.step(optimizer, model)
            scheduler.step()
            value = loss.detach().item()
            local_loss, local_steps = local_loss + value, local_steps + 1
            if rank == 0:
                step_losses.append(value)
            bar.update()
            bar.set_postfix(loss=f"{value:.3f}", refresh=False)
        bar.close()
        backend.average_buffers(model)
        mine = np.arange(rank, n_hold, size)
        correct, loss_sum, count = tl.evaluate(model, hold_x, hold_y, spec, mine, device=device)
        correct, loss_sum, count, tl_sum, tl_n = _mpi_sum(
            comm, [correct, loss_sum, count, local_loss, local_steps])
        history.append({"epoch": epoch + 1, "train_loss": tl_sum / tl_n,
                        "holdout_accuracy": correct / count, "holdout_loss": loss_sum / count,
                        "elapsed_s": prior_s + time.perf_counter() - train_started})
        if rank == 0:
            tl.write_bytes_atomic(ckpt_path, tl.checkpoint_bytes({
                "epoch": epoch + 1, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "history": history, "step_losses": step_losses,
                "config": config, "parent": parent or "", "published": ""}))
            log.info("epoch %d/%d: train loss %.4f, holdout accuracy %.4f (%.0f s)", epoch + 1,
                     s.epochs, history[-1]["train_loss"], history[-1]["holdout_accuracy"],
                     history[-1]["elapsed_s"])
        if opts.stop_after and epoch + 1 - resumed_from >= opts.stop_after and epoch + 1 < s.epochs:
            stopped = True
            break
    backend.close()
    if rank != 0:
        return None

    reached = [h["elapsed_s"] for h in history if h["holdout_accuracy"] >= s.target]
    result: dict[str, Any] = {
        "version": None, "promoted": False, "reason": "", "backend": backend.name,
        "world_size": size, "threads_per_rank": threads, "epochs": len(history),
        "resumed_from_epoch": resumed_from, "holdout": holdout,
        "holdout_accuracy": history[-1]["holdout_accuracy"] if history else None,
        "train_s": round(history[-1]["elapsed_s"], 2) if history else 0.0,
        "target": s.target, "time_to_target_s": round(reached[0], 2) if reached else None}
    if opts.plot and history:
        from models.train_plot import plot_curves

        plot_curves(history, step_losses, opts.plot, target=s.target,
                    title=f"{s.net}: {size} ranks, {backend.name}, batch {s.batch_size}/rank")
        result["plot"] = str(opts.plot)
    if stopped:
        result["reason"] = f"stopped after epoch {len(history)} (--stop-after); resume with --resume"
    elif published:
        result.update(version=published, reason=f"already published as {published} (checkpoint)")
    else:
        result.update(publish(model, s, opts, history, parent, backend.name, size, n, holdout))
        state = tl.checkpoint_from_bytes(ckpt_path.read_bytes())
        tl.write_bytes_atomic(ckpt_path, tl.checkpoint_bytes({**state, "published": result["version"]}))
    result["wall_s"] = round(time.perf_counter() - started, 2)
    return result


@abort_on_error
def main(argv: list[str] | None = None) -> int:
    settings, opts = parse_args(argv)
    result = train(settings, opts)
    if result is not None:  # rank 0: the launcher reads the file, a human the line
        write_result(result)
        print(json.dumps(result), flush=True)
    return 0
