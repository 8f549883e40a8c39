"""Turn the newest benchmark results into the README's Performance section.

    python -m bench.report                       # newest stream-*.json and retrain-*.json
    python -m bench.report --stream FILE --retrain FILE --print

Replaces the ``## Performance`` section of README.md (from its heading to the next ``## ``
heading) or appends one; tables come from the JSON, the plots are the PNGs the runs wrote.
The README's hand-written reading of the numbers (targets missed, why, next change) is the
section after it and is left alone; ``bench/analysis.md``, if present, is included after the
tables.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from bench.common import RESULTS
from framestream.paths import REPO

README = REPO / "README.md"
ANALYSIS = REPO / "bench" / "analysis.md"
SET_TITLES = {"fashion": "Fashion-MNIST JPEG (~0.7 KB), 2-conv CNN",
              "imagenet": "ImageNet-sized JPEG (~26 KB, 256→224), ResNet-18"}


def _fmt(v: Any, spec: str = ".0f") -> str:
    return "—" if v is None else f"{v:{spec}}"


def _newest(name: str, given: str | None) -> tuple[dict[str, Any] | None, str]:
    if given:
        return json.loads(Path(given).read_text()), Path(given).name
    files = sorted(RESULTS.glob(f"{name}-*.json"))
    return (json.loads(files[-1].read_text()), files[-1].name) if files else (None, "")


def machine_line(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    v = m["versions"]
    gpu = m["gpu"].get("name") if m["gpu"].get("available") else "none"
    return (f"{m['cpu']}, {m['logical_cores']} cores, {m['memory_gib']} GiB, GPU {gpu}; "
            f"torch {v.get('torch')}, pyspark {v.get('pyspark')}, ray {v.get('ray')}, "
            f"{v.get('kafka_broker')}, Open MPI {v.get('openmpi')}; load average "
            f"{m['loadavg_start'][0]} at start, {m.get('loadavg_end', ['?'])[0]} at end")


def stream_tables(doc: dict[str, Any], name: str) -> list[str]:
    res, par = doc["results"], doc["params"]
    sets = [s for s in par["sets"] if s in res["sets"]]
    out = [f"Results: [`bench/results/{name}`](bench/results/{name}) ({doc['profile']} profile, "
           f"{doc['started']}, {doc['wall_s']:.0f} s). Machine: {machine_line(doc)}.", ""]
    head = "| frames/s (median) | " + " | ".join(SET_TITLES.get(s, s) for s in sets) + " |"
    out += [head, "|---" * (len(sets) + 1) + "|"]

    def row(label: str, get: Any) -> None:
        out.append(f"| {label} | " + " | ".join(get(s) for s in sets) + " |")

    def peer(key: str) -> Any:
        def get(s: str) -> str:
            p = res["sets"][s].get("peers", {}).get(key)
            return f"{_fmt(p['frames_per_s'])} (start-up {p['startup_s']:.0f} s)" if p else "—"
        return get

    def best(s: str) -> str:
        b = res["sets"][s].get("grid", {}).get("best")
        return (f"**{_fmt(b['frames_per_s'])}** ({b['ranks']} ranks × {b['threads']} threads, "
                f"max batch {b['max_batch']})") if b else "—"

    row("framestream, best grid cell", best)
    row("framestream beside the peers (interleaved)", peer("framestream"))
    row("Spark `predict_batch_udf` (2 Python workers × 1 thread)", peer("spark_udf"))
    row("Ray actors, kafka-python (2 × 1 thread)", peer("ray_actors"))
    row("no framework (1 process × 2 threads)", peer("noframe"))
    for key, label in (("model_only", "ceiling: model only (best ranks × batch)"),
                       ("decode_only", "ceiling: decode only (best of 1, 2 processes)"),
                       ("transport_only", "ceiling: ZeroMQ transport only")):
        row(label, lambda s, k=key: _fmt(res.get("ceilings", {}).get(s, {}).get("best", {}).get(k)))
    row("ceiling: decode + model sharing the cores",
        lambda s: _fmt(res.get("ceilings", {}).get(s, {}).get("shared_cores_limit")))
    row("framestream ÷ min(model only, decode only) (goal ≥ 0.8)",
        lambda s: _fmt(res.get("targets", {}).get(s, {}).get("e2e_over_limit"), ".2f"))
    row("framestream ÷ predict_batch_udf (goal ≥ 1.2)",
        lambda s: _fmt(res.get("targets", {}).get(s, {}).get("over_spark_udf"), ".2f"))
    out.append("")
    for s in sets:
        grid = res["sets"][s].get("grid")
        if not grid:
            continue
        batches = sorted({c["max_batch"] for c in grid["cells"]})
        out += [f"Grid, {SET_TITLES.get(s, s)}: end-to-end frames/s by ranks (rows) and "
                f"`--max-batch` (columns).", "",
                "| ranks × threads | " + " | ".join(str(b) for b in batches) + " |",
                "|---" * (len(batches) + 1) + "|"]
        for r in sorted({c["ranks"] for c in grid["cells"]}):
            cells = {c["max_batch"]: c for c in grid["cells"] if c["ranks"] == r}
            t = next(iter(cells.values()))["threads"]
            out.append(f"| {r} × {t} | " + " | ".join(
                _fmt(cells[b]["frames_per_s"]) if b in cells else "—" for b in batches) + " |")
        out.append("")
    for s in sets:
        lat = res["sets"][s].get("latency")
        if lat:
            out += [f"Latency, {SET_TITLES.get(s, s)}: producer paced at a fraction of "
                    f"{_fmt(lat['max_frames_per_s'])} frames/s for {par['latency_s']:.0f} s; "
                    "capture → prediction on Kafka.", "",
                    "| load | frames/s offered | p50 s | p95 s | p99 s |", "|---|---|---|---|---|"]
            for x in lat["loads"]:
                out.append(f"| {100 * x['load']:.0f} % | {x['rate']:.0f} | "
                           f"{_fmt(x['latency_p50_s'], '.3f')} | {_fmt(x['latency_p95_s'], '.3f')}"
                           f" | {_fmt(x['latency_p99_s'], '.3f')} |")
            out.append("")
        bd = res["sets"][s].get("breakdown")
        if bd:
            out += [f"Where the time goes, {SET_TITLES.get(s, s)}: one burst of {bd['frames']} "
                    f"frames in {bd['wall_s']:.2f} s on {bd['cores']} cores ({bd['profiler']}); "
                    f"core-seconds per 1,000 frames, busy share {bd['utilisation']:.0%}.", "",
                    "| stage | core-s / 1,000 frames |", "|---|---|"]
            out += [f"| {k} | {v:.3f} |" for k, v in bd["cpu_s_per_1000_frames"].items()]
            out.append("")
    plots = [p for p in doc.get("plots", []) if (RESULTS / p).exists()]
    out += [f"![{p}](bench/results/{p})" for p in plots]
    out.append("")
    return out


def retrain_table(doc: dict[str, Any], name: str) -> list[str]:
    par, res = doc["params"], doc["results"]
    out = [f"Retraining ([`bench/results/{name}`](bench/results/{name}), {doc['profile']} profile: "
           f"{par['epochs']} epochs, {'all' if not par['max_train'] else par['max_train']} training "
           f"images, batch {par['batch_size_per_rank']} per process, {par['optimizer']}; "
           f"machine: {machine_line(doc)}):", "",
           f"| run | time to {par['target']} (training clock) | final accuracy | wall |",
           "|---|---|---|---|"]
    for r in res["runs"]:
        out.append(f"| {r['name']} | {_fmt(r['time_to_target_s'], '.1f')} s | "
                   f"{_fmt(r['holdout_accuracy'], '.4f')} | {_fmt(r['wall_s'])} s |")
    ref = res["historical_reference"]
    out += [f"| Dist-Keras, MNIST, 1 worker (historical) | {ref['one_worker']['seconds']} s → "
            f"{ref['one_worker']['accuracy']} | | |",
            f"| Dist-Keras, MNIST, 3 workers (historical) | {ref['three_workers']['seconds']} s → "
            f"{ref['three_workers']['accuracy']} | | |", ""]
    out += [f"![{p}](bench/results/{p})" for p in doc.get("plots", []) if (RESULTS / p).exists()]
    out.append("")
    return out


def targets_table(stream: dict[str, Any] | None, retrain: dict[str, Any] | None) -> list[str]:
    """The issue's goals against the measured figures (reported, never asserted)."""
    rows = []

    def verdict(ok: bool | None) -> str:
        return "—" if ok is None else ("met" if ok else "**missed**")

    for s, t in ((stream or {}).get("results", {}).get("targets") or {}).items():
        r = t.get("e2e_over_limit")
        rows.append((f"end to end ≥ 0.8 × min(model only, decode only), {s}",
                     f"{_fmt(t.get('e2e_best'))} / {_fmt(t.get('limit'))} = {_fmt(r, '.2f')}",
                     verdict(None if r is None else r >= 0.8)))
        for key, label, goal in (("over_spark_udf", "≥ 1.2 × Spark predict_batch_udf", 1.2),
                                 ("over_ray_actors", "ahead of Ray actors", 1.0),
                                 ("over_noframe", "ahead of no framework", 1.0)):
            if key in t:
                v = t[key]
                rows.append((f"{label}, {s}", f"{_fmt(v, '.2f')} ×",
                             verdict(None if v is None else v >= goal)))
        if "p99_at_50pct_s" in t:
            v = t["p99_at_50pct_s"]
            rows.append((f"p99 ≤ 1 s at 50 % load, {s}", f"{_fmt(v, '.2f')} s",
                         verdict(None if v is None else v <= 1.0)))
    if retrain:
        runs = {r["name"]: r for r in retrain["results"]["runs"]}
        n2 = runs.get("mpirun -n 2 (torch)")
        td = next((r for n, r in runs.items() if n.startswith("TorchDistributor")), None)
        if n2 and td:
            ok = retrain["results"].get("target_n2_sooner_than_distributor")
            rows.append((f"`mpirun -n 2` reaches {retrain['params']['target']} sooner than "
                         "TorchDistributor with 2 processes",
                         f"{_fmt(n2['time_to_target_s'], '.1f')} s vs "
                         f"{_fmt(td['time_to_target_s'], '.1f')} s", verdict(ok)))
    if not rows:
        return []
    return (["Goals (from the issue; reported, not asserted):", "", "| goal | measured | |",
             "|---|---|---|"] + [f"| {a} | {b} | {c} |" for a, b, c in rows] + [""])


def section(stream: tuple[dict[str, Any] | None, str],
            retrain: tuple[dict[str, Any] | None, str]) -> str:
    lines = ["## Performance", "",
             "Measured side by side on the same frames, model weights (seed 0) and cores by "
             "`bench/` (benchmarks measure, tests assert). Reproduce:", "", "```bash",
             "make bench                          # quick profiles (~15 min on 2 cores)",
             "python -m bench.stream              # the full grids (72 min on 2 cores); --help",
             "python -m bench.retrain             # time to 0.92 on the full train split",
             "python -m bench.ceilings --help     # model-only / decode-only / transport-only alone",
             "python -m bench.report              # this section from the newest results", "```", "",
             "Throughput is measured on a backlog: the pipeline is paused (SIGSTOP) while a burst "
             "is published to its own topic, every other pipeline stays paused, and frames/s "
             "counts from the resume to the last prediction's Kafka timestamp. One warm-up burst "
             "per pipeline and per grid cell is excluded. Peers write the same prediction fields "
             "with the same producer settings (acks=all, idempotent).", ""]
    if stream[0]:
        lines += stream_tables(*stream)  # type: ignore[arg-type]
    if retrain[0]:
        lines += retrain_table(*retrain)  # type: ignore[arg-type]
    lines += targets_table(stream[0], retrain[0])
    if stream[0] and not stream[0]["machine"]["gpu"].get("available"):
        lines += ["GPU: " + stream[0]["machine"]["gpu"].get("grid", "pending") + ".", ""]
    if ANALYSIS.exists():
        lines += [ANALYSIS.read_text().strip(), ""]
    return "\n".join(lines)


def replace_section(readme: str, new: str) -> str:
    m = re.search(r"^## Performance\n.*?(?=^## |\Z)", readme, flags=re.S | re.M)
    if m:
        return readme[:m.start()] + new.rstrip() + "\n\n" + readme[m.end():].lstrip("\n")
    return readme.rstrip() + "\n\n" + new.rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stream", help="a stream-*.json (default: the newest)")
    p.add_argument("--retrain", help="a retrain-*.json (default: the newest)")
    p.add_argument("--print", action="store_true", help="print the section, leave README alone")
    a = p.parse_args(argv)
    text = section(_newest("stream", a.stream), _newest("retrain", a.retrain))
    if a.print:
        print(text)
        return 0
    README.write_text(replace_section(README.read_text(), text))
    print(f"README.md: Performance section updated ({len(text.splitlines())} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
