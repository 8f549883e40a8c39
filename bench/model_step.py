"""The ranks' model step under each runtime: frames/s at the rank's fixed block, parity, invariance.

``python -m bench.model_step --registry R --version v0001 [--frames 6400] [--rounds 5]``

For each runtime (eager torch; torch channels_last; channels_last with BatchNorm folded into the
convolutions; ONNX Runtime CPU EP on the version's cached export) and thread count: frames/s of
:func:`mpi_workers.inference.forward` (fixed 32-frame blocks) over Fashion-MNIST test frames,
``--rounds`` interleaved rounds in random order (min / median / max frames/s, median CPU-ms per
frame: on a shared machine the CPU time is the steadier figure), the parity against eager torch
(:func:`models.runtime.compare`; on all 10,000 test frames with ``--frames 10000``), and whether scores are bit-identical when the same frames come in random batch compositions. Prints a
JSON line per (runtime, threads). The registry is read, and its ONNX cache written (see
:mod:`models.onnx_export`): point it at a copy of a registry you do not want touched.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import time
from dataclasses import replace
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from framestream import fashion_mnist
from models.onnx_export import cached_export
from models.registry import Registry
from models.runtime import OrtRunner, compare
from models.spec import normalize
from mpi_workers.inference import forward, forward_rows
from mpi_workers.model_cache import LoadedModel


class _TorchRunner:
    """A torch variant behind the runner interface (block in, probabilities out)."""

    def __init__(self, net: torch.nn.Module, spec: Any, channels_last: bool) -> None:
        self.net, self.spec, self.cl = net, spec, channels_last

    def run(self, block: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = normalize(torch.from_numpy(block), self.spec)
            if self.cl:
                x = x.contiguous(memory_format=torch.channels_last)
            return torch.softmax(self.net(x).float(), dim=1).numpy()


def _folded(net: torch.nn.Module) -> torch.nn.Module:
    from torch.ao.quantization import fuse_modules

    return fuse_modules(net.eval(), [["features.0", "features.1"], ["features.4", "features.5"]],
                        inplace=False)


def _timed(fn: Callable[[np.ndarray], np.ndarray], frames: np.ndarray) -> tuple[float, float]:
    """(frames/s wall clock, CPU-ms per frame) of one pass."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn(frames)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return len(frames) / wall, 1000 * cpu / len(frames)


def _invariant(fn: Callable[[np.ndarray], np.ndarray], frames: np.ndarray, whole: np.ndarray,
               seed: int = 7) -> int:
    """Frames whose scores differ in any bit when re-batched at random (0 = invariant)."""
    rng = np.random.default_rng(seed)
    n = min(len(frames), 3000)
    order = rng.permutation(n)
    mixed = np.empty_like(whole[:n])
    start = 0
    while start < n:
        size = int(rng.choice([1, 2, 3, 5, 7, 16, 31, 33, 64, 100, 255, 256, 300]))
        rows = order[start:start + size]
        mixed[rows] = fn(frames[rows])
        start += size
    return int((mixed.view(np.uint32) != whole[:n].view(np.uint32)).any(axis=1).sum())


def _variant(name: str, base: LoadedModel, net: torch.nn.Module, spec: Any, onnx: bytes,
             threads: int) -> LoadedModel:
    if name == "eager":
        return base
    if name == "onnxruntime":
        return replace(base, runner=OrtRunner(onnx, threads))
    variant = copy.deepcopy(net)
    if name.endswith("bnfold"):
        variant = _folded(variant)
    variant = variant.to(memory_format=torch.channels_last)
    return replace(base, runner=_TorchRunner(variant, spec, True))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.model_step", description=__doc__)
    p.add_argument("--registry", required=True)
    p.add_argument("--version", default="v0001")
    p.add_argument("--frames", type=int, default=6400)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--runtimes", nargs="+",
                   default=["eager", "channels_last", "channels_last_bnfold", "onnxruntime"])
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    registry = Registry(args.registry)
    net, manifest = registry.load(args.version)
    spec = manifest.preprocess_spec()
    images, labels = fashion_mnist.load("test")
    reps = -(-args.frames // len(images))
    frames = np.ascontiguousarray(
        np.tile(images, (reps, 1, 1))[:args.frames].reshape(-1, *spec.shape))
    truth = np.tile(labels, reps)[:args.frames]
    base = LoadedModel(args.version, net, spec, "cpu")
    rows = forward_rows("cpu")
    onnx = cached_export(registry, args.version, manifest, net, rows)
    for threads in args.threads:
        torch.set_num_threads(threads)
        eager = forward(base, frames)
        models = {name: _variant(name, base, net, spec, onnx, threads) for name in args.runtimes}
        timings: dict[str, list[tuple[float, float]]] = {name: [] for name in models}
        for r in range(args.rounds):
            for name in np.random.default_rng(r).permutation(list(models)):
                forward(models[name], frames[:64])  # warm-up, excluded
                timings[name].append(_timed(lambda x, m=models[name]: forward(m, x), frames))
        for name, model in models.items():
            fn = lambda x, m=model: forward(m, x)  # noqa: E731
            scores = fn(frames)
            parity = compare(eager, scores)
            rates = sorted(t[0] for t in timings[name])
            cpu = sorted(t[1] for t in timings[name])
            print(json.dumps({
                "runtime": name, "threads": threads, "rows": rows, "frames": len(frames),
                "rounds": args.rounds, "frames_per_s_min": round(rates[0]),
                "frames_per_s_median": round(rates[len(rates) // 2]),
                "frames_per_s_max": round(rates[-1]),
                "cpu_ms_per_frame_median": round(cpu[len(cpu) // 2], 4),
                "max_abs_diff": parity.max_abs_diff, "class_changes": parity.class_changes,
                "near_ties": parity.near_ties, "near_tie_flips": parity.near_tie_flips,
                "accuracy": round(float((scores.argmax(1) == truth).mean()), 5),
                "rebatched_frames_differing": _invariant(fn, frames, scores)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
