"""What ``python -m launcher status`` reads: one JSON record per live gang.

Every launching process (``python -m launcher serve|retrain|run``, the stream driver, the retrain
cron) writes ``<state>/gangs/<name>.json`` whenever its gang changes (reserved, launched, a rank
failed, relaunched) and removes it on release. A record whose owner process is gone is shown as
stale (its gang went with it: Ray removes a dead job's placement groups).
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from framestream.atomic import PRIVATE, write_atomic
from framestream.paths import state_dir


def gangs_dir() -> Path:
    return state_dir() / "gangs"


class GangRecord:
    def __init__(self, name: str, kind: str, ray_info: dict[str, Any],
                 directory: Path | None = None) -> None:
        self.path = Path(directory or gangs_dir()) / f"{name}.json"
        self.data: dict[str, Any] = {
            "name": name, "kind": kind, "pid": os.getpid(), "host": socket.gethostname(),
            "ray_address": ray_info.get("gcs_address", ""),
            "dashboard": ray_info.get("dashboard_url", ""), "state": "reserving",
            "generation": None, "restarts": 0, "failures": [], "started": time.time()}

    def update(self, **fields: Any) -> None:
        self.data.update(fields, updated=time.time())
        # a reader sees the old record or the new one
        write_atomic(self.path, json.dumps(self.data, indent=1, sort_keys=True, default=str),
                     fsync=False, mode=PRIVATE)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def read_all(directory: Path | None = None) -> list[dict[str, Any]]:
    """Every record, each with ``alive``: whether its owner process still runs (on this host)."""
    import psutil

    out = []
    for path in sorted(Path(directory or gangs_dir()).glob("*.json")):
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # removed or being replaced right now
        same_host = rec.get("host") == socket.gethostname()
        rec["alive"] = psutil.pid_exists(rec.get("pid", -1)) if same_host else None
        out.append(rec)
    return out


def render(records: list[dict[str, Any]], cluster: dict[str, Any] | None = None) -> str:
    """Human-readable status: gangs, bundles/nodes, ranks, endpoint generation, restarts."""
    lines: list[str] = []
    if cluster:
        lines.append(f"Ray cluster {cluster.get('address', '')}: {cluster.get('nodes', 0)} nodes, "
                     f"free {cluster.get('free', {})} of {cluster.get('total', {})}")
        if cluster.get("dashboard"):
            lines.append(f"  dashboard: {cluster['dashboard']}")
        for pg in cluster.get("placement_groups", []):
            lines.append(f"  placement group {pg['name'] or pg['id']}: {pg['state']}, "
                         f"{pg['bundles']} bundles ({pg['strategy']})")
    if not records:
        lines.append("no gangs")
    for r in records:
        alive = {True: "", False: " [stale: owner process gone]", None: ""}[r.get("alive")]
        gen = r.get("generation")
        lines.append(f"gang {r['name']} ({r['kind']}): {r['state']}{alive}, owner pid {r['pid']} "
                     f"on {r['host']}, generation {gen if gen is not None else '-'}, "
                     f"restarts {r.get('restarts', 0)}, reserved in {r.get('reserve_s', '-')}s")
        if r.get("dashboard"):
            lines.append(f"  dashboard: {r['dashboard']}")
        lines.append(f"  ray: {r.get('ray_address') or '-'}, placement group "
                     f"{r.get('placement_group') or '-'} ({r.get('strategy', '-')})")
        for b in r.get("bundles", []):
            gpus = ",".join(b.get("gpu_ids", [])) or "-"
            lines.append(f"  bundle {b['index']}: {b.get('resources')} on {b['node_ip']} "
                         f"({b['hostname']}), GPUs {gpus}")
        for k in r.get("ranks", []):
            extra = "".join(f", {key} {k[key]}" for key in ("pid", "endpoint") if k.get(key))
            lines.append(f"  rank {k['rank']}: bundle {k['bundle']} on {k['host']}{extra}")
        for f in r.get("failures", [])[-3:]:
            lines.append(f"  failure: {f}")
    return "\n".join(lines)
