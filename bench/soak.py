"""``make soak`` / ``python -m bench.soak [--minutes 60]``: a long steady stream with a retrain
and promotion every ``--retrain-every`` minutes, watching for leaks.

What runs: the real job (``spark-submit jobs/stream_classify.py --ranks 2 --registry R``), a
producer at ``--rate`` frames/s for the whole time, and ``python -m jobs.retrain_cron --once``
every 10 minutes (``mpirun -n 2`` training one short epoch, promoted with ``--margin -1`` so every
run really switches the serving ranks). Every 30 s the RSS and open file descriptors of the ranks,
the Spark Python workers (executors) and the driver (spark-submit's JVM and the Python driver) are
sampled. At the end every frame must be answered (zero lost), and the growth of each curve is
reported as a least-squares slope per hour over the samples after the first 5 minutes (start-up).

Writes ``.state/soak/<run>/soak.json`` and ``soak.png`` (and prints the summary). A measurement,
not a test (bench/, beside the other long runs); it drives the stream with the chaos suite's
harness (tests/chaos/harness.py).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from framestream.paths import REPO, state_dir
from framestream.kafka_admin import delete_topics, ensure_topics
from tests.chaos.harness import PROFILES, ChaosStream

ROLES = ("ranks", "executors", "driver")


def processes(run: ChaosStream) -> dict[str, list[Any]]:
    """psutil processes per role, found afresh at every sample (relaunches change pids)."""
    import psutil

    found: dict[str, list[Any]] = {r: [] for r in ROLES}
    for r in run.ranks():
        try:
            found["ranks"].append(psutil.Process(r["pid"]))
        except psutil.Error:
            pass
    root = psutil.Process(run.proc.pid)
    found["driver"].append(root)
    for p in root.children(recursive=True):
        try:
            line = " ".join(p.cmdline())
        except psutil.Error:
            continue
        if "pyspark.daemon" in line:
            found["executors"].append(p)
        elif "stream_classify.py" in line and "python" in p.name():
            found["driver"].append(p)
    return found


def sample(run: ChaosStream, started: float) -> dict[str, Any]:
    import psutil

    row: dict[str, Any] = {"t_s": round(time.time() - started, 1)}
    for role, procs in processes(run).items():
        rss = fds = 0
        for p in procs:
            try:
                rss += p.memory_info().rss
                fds += p.num_fds()
            except psutil.Error:
                continue
        row[f"{role}_rss_mb"] = round(rss / 2**20, 1)
        row[f"{role}_fds"] = fds
        row[f"{role}_procs"] = len(procs)
    return row


def slope_per_hour(ts: list[float], ys: list[float]) -> float | None:
    if len(ts) < 3:
        return None
    return round(float(np.polyfit(np.asarray(ts) / 3600, np.asarray(ys), 1)[0]), 2)


def retrain(registry: Path, work: Path, k: int) -> dict[str, Any]:
    """One scheduled retrain through the cron entry point; returns its runs.jsonl record."""
    args = ["--epochs", "1", "--max-train", "6000", "--holdout-limit", "1000", "--threads", "1",
            "--backend", "torch", "--no-progress", "--margin", "-1", "--seed", str(k),
            "--registry", str(registry), "--checkpoint-dir", str(work / f"ckpt-{k}")]
    with open(work / "cron.log", "ab") as log:
        code = subprocess.run([sys.executable, "-m", "jobs.retrain_cron", "--once", "--ranks", "2",
                               "--state-dir", str(work / "cron"), "--", *args], cwd=REPO,
                              stdout=log,
                              stderr=subprocess.STDOUT, timeout=1800).returncode
    entry = json.loads((work / "cron" / "runs.jsonl").read_text().splitlines()[-1])
    return {**entry, "exit_code": code}


def plot(samples: list[dict[str, Any]], promotions: list[dict[str, Any]], path: Path,
         title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    t = [s["t_s"] / 60 for s in samples]
    for role in ROLES:
        top.plot(t, [s[f"{role}_rss_mb"] for s in samples], label=role)
        bottom.plot(t, [s[f"{role}_fds"] for s in samples], label=role)
    for ax in (top, bottom):
        for p in promotions:
            ax.axvline(p["t_s"] / 60, color="grey", linestyle=":", linewidth=1)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left")
    top.set_ylabel("RSS (MiB, sum per role)")
    bottom.set_ylabel("open file descriptors")
    bottom.set_xlabel("minutes (dotted: retrain + promotion)")
    top.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=60.0)
    p.add_argument("--retrain-every", type=float, default=10.0, help="minutes")
    p.add_argument("--sample-every", type=float, default=30.0, help="seconds")
    p.add_argument("--rate", type=float, default=50.0, help="frames/s")
    p.add_argument("--warmup", type=float, default=5.0, help="minutes left out of the slopes")
    p.add_argument("--bootstrap", default="127.0.0.1:9092")
    a = p.parse_args(argv)
    from framestream.logs import setup_logging
    from models.registry import Registry

    setup_logging()
    name = time.strftime("%Y%m%d-%H%M%S")
    work = state_dir() / "soak" / name
    work.mkdir(parents=True)
    registry = Registry(work / "registry")
    print(f"soak {name}: {a.minutes:g} min, first version ...", flush=True)
    first = retrain(registry.root, work, 0)
    assert first["status"] == "ok" and registry.serving(), first
    topics = {t: f"soak-{t}-{uuid.uuid4().hex[:8]}" for t in ("frames", "predictions", "dlq")}
    ensure_topics(a.bootstrap, list(topics.values()), 4)
    prof = replace(PROFILES["ci"], name="soak", frames=0, rate=a.rate, hostile=0, finish_s=600)
    run = ChaosStream(a.bootstrap, topics, work, prof, model=("--registry", str(registry.root)))
    samples: list[dict[str, Any]] = []
    promotions: list[dict[str, Any]] = []
    done = threading.Event()
    run.start()
    started = time.time()
    try:
        run.produce(until=done)
        next_sample, next_retrain, k = started, started + a.retrain_every * 60, 1
        trainer: threading.Thread | None = None

        def retrain_now(k: int) -> None:  # in the background: sampling goes on meanwhile
            entry = retrain(registry.root, work, k)
            promotions.append({"t_s": round(time.time() - started, 1), **entry,
                               "serving": registry.serving()})
            print(json.dumps(promotions[-1]), flush=True)

        while time.time() - started < a.minutes * 60:
            now = time.time()
            if now >= next_sample:
                samples.append({**sample(run, started), "outputs": run.outputs()})
                while next_sample <= now:
                    next_sample += a.sample_every
                print(json.dumps(samples[-1]), flush=True)
            if now >= next_retrain and (trainer is None or not trainer.is_alive()):
                trainer = threading.Thread(target=retrain_now, args=(k,), daemon=True)
                trainer.start()
                next_retrain += a.retrain_every * 60
                k += 1
            time.sleep(max(0.0, min(next_sample, next_retrain) - time.time()))  # the schedule
        if trainer is not None:
            trainer.join(1800)
        done.set()
        books = run.finish()
    finally:
        done.set()
        code = run.stop()
    steady = [s for s in samples if s["t_s"] >= a.warmup * 60] or samples
    slopes = {f"{role}_{what}_per_h": slope_per_hour([s["t_s"] for s in steady],
                                                     [s[f"{role}_{what}"] for s in steady])
              for role in ROLES for what in ("rss_mb", "fds")}
    summary = {"run": name, "minutes": a.minutes, "rate": a.rate, "exit_code": code,
               "frames_in": books.frames_in, "lost": books.missing, "conserved": books.conserved,
               "duplicates": books.duplicates, "versions": books.versions,
               "promotions": len([x for x in promotions if x.get("promoted")]),
               "retrains": promotions, "slopes": slopes, "samples": samples,
               "books": asdict(books), "warmup_min": a.warmup}
    (work / "soak.json").write_text(json.dumps(summary, indent=2))
    plot(samples, promotions, work / "soak.png",
         f"soak {name}: {a.minutes:g} min at {a.rate:g} frames/s, retrain every "
         f"{a.retrain_every:g} min; {books.frames_in} frames, lost {books.missing}")
    delete_topics(a.bootstrap, list(topics.values()))
    print(json.dumps({k: v for k, v in summary.items() if k not in ("samples", "books",
                                                                    "retrains")}, indent=2))
    print(f"wrote {work / 'soak.json'} and {work / 'soak.png'}")
    return 0 if code == 0 and books.conserved else 1


if __name__ == "__main__":
    sys.exit(main())
