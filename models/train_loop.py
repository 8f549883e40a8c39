"""Pure training and evaluation helpers: sharding, augmentation, evaluation, checkpoints.

No MPI and no process group here (that is :mod:`mpi_workers.train`), so everything is testable in
one process. Frames are uint8 NHWC, exactly what ETL ships to serving ranks; the net sees them only
through :func:`models.spec.normalize` with the net's :class:`~models.spec.PreprocessSpec`.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from framestream.atomic import PRIVATE, write_atomic
from models.spec import PreprocessSpec, normalize

CHECKPOINT_FORMAT = 1


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def shard_indices(n: int, rank: int, world_size: int, seed: int, epoch: int,
                  shuffle: bool = True) -> np.ndarray:
    """This rank's sample indices for one epoch, like torch's ``DistributedSampler``.

    One permutation per (seed, epoch), the same on every rank; padded by wrapping around so every
    rank gets exactly ``ceil(n / world_size)`` samples (equal step counts: no rank waits forever
    in an allreduce the others never reach); rank ``r`` takes positions ``r, r + world, ...``.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world of {world_size}")
    order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
    per_rank = _ceil_div(n, world_size)
    total = per_rank * world_size
    if total > n:
        order = np.concatenate([order, order[: total - n]])
    return order[rank:total:world_size]


def batches(indices: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(indices), batch_size):
        yield indices[start:start + batch_size]


def steps_per_epoch(n: int, world_size: int, batch_size: int) -> int:
    """Optimizer steps per epoch: the same on every rank (see :func:`shard_indices`)."""
    return _ceil_div(_ceil_div(n, world_size), batch_size)


def augment(frames: torch.Tensor, generator: torch.Generator, pad: int = 2,
            flip: bool = True) -> torch.Tensor:
    """Random horizontal flip and random crop (zero padding ``pad``) of uint8 NHWC frames."""
    n, h, w, _ = frames.shape
    if flip:
        flipped = torch.rand(n, generator=generator) < 0.5
        frames = torch.where(flipped.view(n, 1, 1, 1), frames.flip(2), frames)
    if pad > 0:
        padded = F.pad(frames, (0, 0, pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
        rows = (dy[:, None] + torch.arange(h))[:, :, None]
        cols = (dx[:, None] + torch.arange(w))[:, None, :]
        frames = padded[torch.arange(n)[:, None, None], rows, cols]
    return frames


def for_training(model: nn.Module, device: torch.device | str = "cpu",
                 channels_last: bool = True) -> nn.Module:
    """``model`` on ``device``, in channels_last memory format unless told not to (Horovod
    refuses non-contiguous tensors): oneDNN's convolutions then run without layout conversions
    (1.3-1.85 x the images/s of the default format on one CPU thread, see the README's
    retraining section). The weights' values and names are unchanged: the registry stores them
    contiguous, and serving loads them into a default-format net."""
    return model.to(device=device, memory_format=torch.channels_last if channels_last
                    else torch.contiguous_format)


def inputs(frames: torch.Tensor, spec: PreprocessSpec, device: torch.device | str = "cpu",
           channels_last: bool = True) -> torch.Tensor:
    """uint8 NHWC frames -> the normalised float32 batch a :func:`for_training` net takes."""
    x = normalize(frames.to(device), spec)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def frames_of(images: np.ndarray, index: np.ndarray) -> torch.Tensor:
    """uint8 NHWC frames of ``images`` ([N, H, W] grayscale or [N, H, W, C]) at ``index``."""
    picked = images[index]  # fancy indexing copies: writable, whatever the source array
    if picked.ndim == 3:
        picked = picked[..., None]
    return torch.from_numpy(picked)


@torch.no_grad()
def evaluate(model: nn.Module, images: np.ndarray, labels: np.ndarray, spec: PreprocessSpec,
             index: np.ndarray | None = None, batch_size: int = 1000,
             device: torch.device | str = "cpu") -> tuple[int, float, int]:
    """(correct, summed cross-entropy, count) of ``model`` in eval mode on ``images[index]``."""
    was_training = model.training
    model.eval()
    index = np.arange(len(images)) if index is None else index
    correct, loss_sum = 0, 0.0
    for part in batches(index, batch_size):
        x = inputs(frames_of(images, part), spec, device)
        y = torch.from_numpy(labels[part].astype(np.int64)).to(device)
        logits = model(x)
        loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
    model.train(was_training)
    return correct, loss_sum, len(index)


def make_optimizer(name: str, model: nn.Module, lr: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr)
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True,
                               weight_decay=5e-4)
    raise ValueError(f"unknown optimizer {name!r}: adam or sgd")


def make_scheduler(optimizer: torch.optim.Optimizer, lr: float,
                   total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """One-cycle: a short warm-up to ``lr``, then annealing to ~0 by the last step."""
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=max(total_steps, 2),
                                               pct_start=0.15)


def checkpoint_bytes(state: dict[str, Any]) -> bytes:
    """Serialize a checkpoint (tensors, numbers, strings, lists, dicts only)."""
    buf = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, **state}, buf)
    return buf.getvalue()


def checkpoint_from_bytes(data: bytes) -> dict[str, Any]:
    """The inverse of :func:`checkpoint_bytes`, weights-only (no arbitrary objects unpickled)."""
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"checkpoint format {state.get('format')!r}, expected {CHECKPOINT_FORMAT}")
    return state


def write_bytes_atomic(path: Path, data: bytes) -> None:
    write_atomic(path, data, mode=PRIVATE)
