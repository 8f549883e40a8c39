"""Batch invariance, checked the same way for every runtime: the same frames alone, in one pass
and in random batch compositions must give the same bits."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

SIZES = (1, 2, 3, 5, 7, 16, 31, 33, 64, 100, 255, 256, 300)


def bits(scores: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(scores, dtype=np.float32).view(np.uint32)


def assert_batch_invariant(forward: Callable[[np.ndarray, np.random.Generator], np.ndarray],
                           frames: np.ndarray, seed: int) -> None:
    """``forward(frames, rng)`` -> scores; every 25th frame alone, all in one pass, and all in
    random batch sizes with random neighbours and positions must agree bit for bit."""
    n = len(frames)
    rng = np.random.default_rng(seed)
    alone = bits(np.concatenate([forward(frames[i:i + 1], rng) for i in range(0, n, 25)]))
    whole = bits(forward(frames, rng))
    order = rng.permutation(n)
    mixed = np.empty_like(whole)
    start = 0
    while start < n:
        rows = order[start:start + int(rng.choice(SIZES))]
        mixed[rows] = bits(forward(frames[rows], rng))
        start += len(rows)
    assert np.array_equal(whole[::25], alone), \
        f"{int((whole[::25] != alone).any(axis=1).sum())} frames differ alone vs in one batch"
    assert np.array_equal(whole, mixed), \
        f"{int((whole != mixed).any(axis=1).sum())} of {n} frames differ when re-batched"
