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


def _runtime(lane: dict[str, Any]) -> str:
    """The model step a lane ran (hatched bars: ONNX Runtime)."""
    served = str(lane.get("runtime_served") or lane.get("runtime") or "eager")
    return served.split(" ")[0]


def fair_plot(pipelines: dict[str, Any], path: Path) -> None:
    """Median frames/s per pipeline with its min..max over the rounds as an error bar."""
    lanes = sorted(pipelines, key=lambda n: ("@" in n, list(PEER_NAMES).index(n.split("@")[0])))
    names = [n for n in lanes if n.split("@")[0] in PEER_NAMES]
    fps = [pipelines[n]["frames_per_s"] for n in names]
    med = [f["median"] or 0 for f in fps]
    err = [[m - (f["min"] or m) for m, f in zip(med, fps)],
           [(f["max"] or m) - m for m, f in zip(med, fps)]]
    fig, ax = plt.subplots(figsize=(max(7.0, 1.1 * len(names)), 4.2))
    bars = ax.bar(range(len(names)), med, yerr=err, capsize=6,
                  color=["tab:blue" if n.startswith("framestream") else "tab:orange"
                         for n in names],
                  hatch=["//" if _runtime(pipelines[n]) == "onnxruntime" else "" for n in names])
    for bar, v in zip(bars, med):
        ax.text(bar.get_x() + bar.get_width() / 2, v, f"{v:.0f}", ha="left", va="bottom",
                fontsize=8)
    ax.set_xticks(range(len(names)), [f"{PEER_NAMES[n.split('@')[0]]}\n[{_runtime(pipelines[n])}]"
                                      for n in names], fontsize=7)
    ax.set_ylabel("frames/s (median; bar: min..max of the rounds)")
    ax.set_title("same frames, model, cores; each pipeline at its own best setting")
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
    try:
        if res.get("pipelines"):
            fair_plot(res["pipelines"], run.png("fair"))
        if res.get("latency"):
            latency_plot(res["latency"], run.png("latency"))
        if res.get("breakdown"):
            breakdown_plot(res["breakdown"], run.png("breakdown"))
    except Exception as exc:  # a plot must never lose the measurements
        log.exception("plotting failed: %s", exc)


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
