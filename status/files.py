"""What the status page reads from files and the ranks: the registry (versions, promotions), the
cron's runs log, the ranks' endpoint file and each rank's Prometheus endpoint.

Every reader returns plain dicts for JSON and never raises on a missing or damaged file: the page
shows what it could read and says what it could not (``error``).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from models.errors import RegistryError
from models.registry import DECISIONS_FILE, Registry

log = logging.getLogger(__name__)
TAIL = 50  # lines kept from the end of an append-only log


def _jsonl_tail(path: Path, n: int = TAIL) -> list[dict[str, Any]]:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 256 * 1024))
            lines = f.read().decode("utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines[-n:]:
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a half-written last line, or the cut first one
        if isinstance(entry, dict):
            out.append(entry)
    return out


def registry_view(root: Path) -> dict[str, Any]:
    """The serving version, every version's holdout accuracy, and the promote/rollback log."""
    reg = Registry(root)
    view: dict[str, Any] = {"root": str(root), "serving": None, "versions": [], "decisions": [],
                            "error": ""}
    try:
        view["serving"] = reg.serving()
        view["versions"] = [{"version": m.version, "parent": m.parent, "created": m.created,
                             "net": m.net, "holdout_accuracy": m.metrics.get("holdout_accuracy")}
                            for m in reg.versions()]
    except (RegistryError, OSError, ValueError) as exc:
        view["error"] = str(exc)
    view["decisions"] = _jsonl_tail(root / DECISIONS_FILE)[::-1]
    return view


def pins_view(pins_dir: Path, n: int = 12) -> dict[str, Any]:
    """The last ``n`` micro-batches' pinned model versions (``<checkpoint>/framestream-pins/``,
    one small JSON file per batch id, written by the driver), newest first."""
    batches = []
    for path in sorted(pins_dir.glob("*.json"))[-n:][::-1]:
        try:
            pin = json.loads(path.read_text())
            batches.append({"batch_id": int(pin["batch_id"]),
                            "model_version": str(pin["model_version"]),
                            "pinned_at": pin.get("pinned_at")})
        except (OSError, ValueError, KeyError, TypeError):
            continue  # pruned or replaced right now
    return {"dir": str(pins_dir), "batches": batches}


def runs_view(runs_log: Path, root: Path) -> list[dict[str, Any]]:
    """The cron's runs, newest first, each with the accuracy per epoch of the version it made."""
    reg = Registry(root)
    runs = _jsonl_tail(runs_log)[::-1]
    for run in runs:
        run["epochs"] = []
        if run.get("version"):
            try:
                history = reg.manifest(str(run["version"])).metrics.get("history") or []
                run["epochs"] = [h.get("holdout_accuracy") for h in history
                                 if isinstance(h, dict)]
            except (RegistryError, OSError, ValueError) as exc:
                run["epochs_error"] = str(exc)
    return runs


def _scrape(url: str, timeout: float) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (http from the file)
        text = resp.read(4 * 1024 * 1024).decode("utf-8", errors="replace")
    out: dict[str, Any] = {"frames": 0.0, "requests": 0.0, "queue_depth": None,
                           "batch_count": 0.0, "batch_sum": 0.0, "model": None}
    cumulative: dict[float, float] = {}  # histogram bucket upper bound -> forward passes <= it
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "framestream_rank_frames_total":
                out["frames"] += s.value
            elif s.name == "framestream_rank_requests_total":
                out["requests"] += s.value
            elif s.name == "framestream_rank_queue_depth":
                out["queue_depth"] = s.value
            elif s.name == "framestream_rank_batch_frames_bucket":
                le = float(s.labels.get("le", "nan"))
                cumulative[le] = cumulative.get(le, 0.0) + s.value
            elif s.name == "framestream_rank_batch_frames_count":
                out["batch_count"] += s.value
            elif s.name == "framestream_rank_batch_frames_sum":
                out["batch_sum"] += s.value
            elif s.name == "framestream_rank_model_info":
                out["model"] = s.labels.get("version") or next(
                    (v for k, v in s.labels.items() if k != "rank"), None)
    out["mean_batch"] = out["batch_sum"] / out["batch_count"] if out["batch_count"] else None
    out["batch_sizes"] = batch_sizes(cumulative)
    return out


def batch_sizes(cumulative: dict[float, float]) -> list[dict[str, Any]]:
    """Prometheus' cumulative buckets as the forward passes in each size range: ``[{"lo": 1,
    "hi": 1, "n": 3}, {"lo": 2, "hi": 5, "n": 0}, ..., {"lo": 1025, "hi": None, "n": 1}]``
    (sizes are whole frames, so the range after bound ``b`` starts at ``floor(b) + 1``)."""
    out, below, lo = [], 0.0, 1
    for le in sorted(b for b in cumulative if b == b):  # NaN (a bad label) is dropped
        n = cumulative[le] - below
        below = cumulative[le]
        hi = None if le == float("inf") else int(le)
        out.append({"lo": lo, "hi": hi, "n": int(round(n))})
        lo = (hi or 0) + 1
    return out


class RankWatch:
    """The ranks of the endpoint file, scraped; requests/s from successive scrapes."""

    def __init__(self, endpoints_path: Path, timeout: float) -> None:
        self.path, self.timeout = endpoints_path, timeout
        self._last: dict[tuple[int, int], tuple[float, float]] = {}  # (rank, pid) -> (t, requests)

    def view(self, now: float) -> dict[str, Any]:
        try:
            published = json.loads(self.path.read_text())
            ranks = list(published["ranks"])
        except FileNotFoundError:
            return {"file": str(self.path), "generation": None, "ranks": [],
                    "error": "no endpoint file yet"}
        except (ValueError, KeyError, TypeError, OSError) as exc:
            return {"file": str(self.path), "generation": None, "ranks": [], "error": str(exc)}
        out = []
        for r in ranks:
            row = {k: r.get(k) for k in ("rank", "host", "pid", "device", "endpoint", "metrics")}
            row.update(up=False, error="")
            try:
                m = _scrape(str(r.get("metrics") or ""), self.timeout)
            except (OSError, ValueError, socket.timeout) as exc:
                row["error"] = str(exc)[:200]
            else:
                key = (int(r.get("rank", -1)), int(r.get("pid", -1)))
                prev = self._last.get(key)
                rps = ((m["requests"] - prev[1]) / (now - prev[0])
                       if prev and now > prev[0] else None)
                self._last[key] = (now, m["requests"])
                row.update(up=True, requests_per_s=rps, **m)
            out.append(row)
        return {"file": str(self.path), "generation": published.get("generation"),
                "model_version": published.get("model_version"), "ranks": out, "error": ""}
