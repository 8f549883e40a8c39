"""PNG plots of benchmark results (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

log = logging.getLogger(__name__)
PEER_NAMES = {"framestream": "framestream\n(Spark→ZeroMQ→MPI)",
              "spark_udf": "Spark\npredict_batch_udf", "ray_actors": "Ray actors\n+ kafka-python",
              "noframe": "no framework\n(1 process)"}


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def grid_plot(set_name: str, grid: dict[str, Any], ceilings: dict[str, Any] | None,
              path: Path, title: str = "") -> None:
    cells = grid["cells"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for b in sorted({c["max_batch"] for c in cells}):
        pts = sorted((c["ranks"], c["frames_per_s"] or 0) for c in cells if c["max_batch"] == b)
        ax.plot([r for r, _ in pts], [f for _, f in pts], marker="o", label=f"max batch {b}")
    if ceilings:
        ax.axhline(ceilings["best"]["model_only"], ls="--", c="grey", lw=1,
                   label=f"model-only best ({ceilings['best']['model_only']:.0f})")
        ax.axhline(ceilings["shared_cores_limit"], ls=":", c="black", lw=1,
                   label=f"decode+model sharing cores ({ceilings['shared_cores_limit']:.0f})")
    ax.set_xlabel("ranks")
    ax.set_xticks(sorted({c["ranks"] for c in cells}))
    ax.set_ylabel("frames/s, end to end (Kafka → predictions)")
    ax.set_title(title or f"framestream throughput: {set_name}")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    _save(fig, path)


def compare_plot(set_name: str, peers: dict[str, Any], ceilings: dict[str, Any] | None,
                 path: Path) -> None:
    names = [n for n in PEER_NAMES if n in peers]
    values = [peers[n]["frames_per_s"] or 0 for n in names]
    labels = [PEER_NAMES[n] for n in names]
    colors = ["tab:blue"] + ["tab:orange"] * (len(names) - 1)
    if ceilings:
        for key, label in (("model_only", "model only"), ("decode_only", "decode only")):
            labels.append(f"ceiling:\n{label}")
            values.append(ceilings["best"][key])
            colors.append("lightgrey")
    fig, ax = plt.subplots(figsize=(7.6, 4.2))
    bars = ax.bar(range(len(values)), values, color=colors)
    for bar, v in zip(bars, values):
        ax.text(bar.get_x() + bar.get_width() / 2, v, f"{v:.0f}", ha="center", va="bottom",
                fontsize=8)
    ax.set_xticks(range(len(values)), labels, fontsize=7)
    ax.set_ylabel("frames/s (median of interleaved bursts)")
    if ceilings and max(values) > 4 * max(values[:len(names)] or [1]):
        ax.set_yscale("log")
    ax.set_title(f"same frames, model and cores: {set_name}")
    _save(fig, path)


def latency_plot(latency: dict[str, Any], path: Path) -> None:
    loads = latency["loads"]
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    xs = [f"{100 * x['load']:.0f}%\n{x['rate']:.0f}/s" for x in loads]
    for i, (q, c) in enumerate((("p50", "tab:green"), ("p95", "tab:orange"), ("p99", "tab:red"))):
        ax.bar([j + (i - 1) * 0.27 for j in range(len(loads))],
               [x[f"latency_{q}_s"] or 0 for x in loads], width=0.27, label=q, color=c)
    ax.axhline(1.0, ls="--", c="grey", lw=1, label="goal: p99 ≤ 1 s at 50%")
    ax.set_xticks(range(len(loads)), xs)
    ax.set_ylabel("capture → prediction on Kafka (s)")
    ax.set_title("framestream latency under load")
    ax.legend(fontsize=8)
    _save(fig, path)


def breakdown_plot(bd: dict[str, Any], path: Path) -> None:
    stages = bd["cpu_s_per_1000_frames"]
    fig, ax = plt.subplots(figsize=(7.0, 4.6))
    bottom = 0.0
    cmap = plt.get_cmap("tab20")
    for i, (stage, v) in enumerate(stages.items()):
        color = "whitesmoke" if stage.startswith("idle") else cmap(i % 20)
        ax.bar([0], [v], bottom=bottom, color=color, edgecolor="white", label=f"{stage}: {v:.3f}")
        bottom += v
    ax.set_xticks([0], [f"{bd['frames']} frames\n{bd['wall_s']:.2f} s × {bd['cores']} cores"])
    ax.set_xlim(-0.6, 2.6)
    ax.set_ylabel("core-seconds per 1,000 frames")
    ax.set_title("where the time goes (one end-to-end burst)")
    ax.legend(fontsize=7, loc="upper right")
    _save(fig, path)


def stream_plots(run: Any) -> None:
    """Every plot of a ``bench.stream`` run, named after it; failures are logged, not raised."""
    res = run.results
    for set_name, r in res.get("sets", {}).items():
        ceil = res.get("ceilings", {}).get(set_name)
        try:
            if r.get("grid"):
                grid_plot(set_name, r["grid"], ceil, run.png(f"grid-{set_name}"))
            if r.get("peers"):
                compare_plot(set_name, r["peers"], ceil, run.png(f"peers-{set_name}"))
            if r.get("latency"):
                latency_plot(r["latency"], run.png(f"latency-{set_name}"))
            if r.get("breakdown"):
                breakdown_plot(r["breakdown"], run.png(f"breakdown-{set_name}"))
        except Exception as exc:  # a plot must never lose the measurements
            log.exception("plotting %s failed: %s", set_name, exc)


def retrain_plot(rows: list[dict[str, Any]], path: Path, target: float) -> None:
    fig, ax = plt.subplots(figsize=(6.8, 4.2))
    for row in rows:
        hist = row.get("history") or []
        if hist:
            ax.plot([h["elapsed_s"] for h in hist], [h["holdout_accuracy"] for h in hist],
                    marker="o", label=row["name"])
    ax.axhline(target, ls="--", c="grey", lw=1, label=f"target {target}")
    ax.set_xlabel("training seconds")
    ax.set_ylabel("Fashion-MNIST test accuracy")
    ax.set_title("retraining: time to accuracy (same net, optimizer, batch)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)
