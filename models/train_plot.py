"""Training curves as a PNG (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def plot_curves(history: list[dict[str, Any]], step_losses: list[float], path: Path | str,
                title: str = "", target: float | None = None) -> Path:
    """Left: training loss per step (and its moving average) with holdout loss per epoch.
    Right: holdout accuracy per epoch against wall time, with the target line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    if step_losses:
        steps = np.arange(1, len(step_losses) + 1)
        ax_loss.plot(steps, step_losses, lw=0.5, alpha=0.4, label="train loss (rank 0, per step)")
        window = max(1, min(50, len(step_losses) // 10))
        smooth = np.convolve(step_losses, np.ones(window) / window, mode="valid")
        ax_loss.plot(steps[window - 1:], smooth, lw=1.5, label=f"moving average ({window})")
        per_epoch = len(step_losses) / max(len(history), 1)
        ax_loss.plot([h["epoch"] * per_epoch for h in history],
                     [h["holdout_loss"] for h in history], "o-", label="holdout loss")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("cross-entropy")
    ax_loss.legend()
    ax_loss.grid(alpha=0.3)
    if history:
        ax_acc.plot([h["elapsed_s"] for h in history], [h["holdout_accuracy"] for h in history],
                    "o-", label="holdout accuracy")
        for h in history:
            ax_acc.annotate(f"ep {h['epoch']}", (h["elapsed_s"], h["holdout_accuracy"]),
                            textcoords="offset points", xytext=(0, 6), fontsize=7, ha="center")
    if target is not None:
        ax_acc.axhline(target, color="gray", ls="--", lw=1, label=f"target {target:g}")
    ax_acc.set_xlabel("training wall time (s)")
    ax_acc.set_ylabel("accuracy")
    ax_acc.legend(loc="lower right")
    ax_acc.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
