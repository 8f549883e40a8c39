"""Web UIs that framestream's processes serve, announced in the state folder for the status page.

The stream driver knows its Spark UI's address (``spark.sparkContext.uiWebUrl``: 4040, or the next
free port when another driver has it); the status page, in the driver or alone
(``python -m status``), does not. The driver writes ``<state>/ui/<kind>-<pid>.json`` (kind, url,
pid, host, and what it serves, e.g. the frames topic) when its UI is up and removes it when it
stops. A reader skips records of processes that are gone (on this host), so a driver killed with
``kill -9`` leaves nothing the page would link to.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from framestream.atomic import write_atomic
from framestream.paths import state_dir

UI_DIR = "ui"
SPARK_UI = "spark_ui"


def ui_dir(state: Path | None = None) -> Path:
    return Path(state or state_dir()) / UI_DIR


def announce(kind: str, url: str, state: Path | None = None, **about: Any) -> Path | None:
    """Record that this process serves ``url``; returns the record's path (None when no url)."""
    if not url:
        return None
    path = ui_dir(state) / f"{kind}-{os.getpid()}.json"
    record = {"kind": kind, "url": url, "pid": os.getpid(), "host": socket.gethostname(),
              "since": time.time(), **about}
    write_atomic(path, json.dumps(record, sort_keys=True), fsync=False)
    return path


def withdraw(path: Path | None) -> None:
    if path is not None:
        path.unlink(missing_ok=True)


def _alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except PermissionError:
        return True  # someone else's process, but it exists
    except (OSError, ValueError, TypeError):
        return False
    return True


def announced(state: Path | None = None, kind: str | None = None) -> list[dict[str, Any]]:
    """Every live record (newest first); those of a process gone from this host are skipped."""
    out = []
    for path in ui_dir(state).glob("*.json"):
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # removed or replaced right now
        if not isinstance(rec, dict) or (kind and rec.get("kind") != kind):
            continue
        if rec.get("host") == socket.gethostname() and not _alive(rec.get("pid")):
            continue
        out.append(rec)
    return sorted(out, key=lambda r: -float(r.get("since") or 0))
