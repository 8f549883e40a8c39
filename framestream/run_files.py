"""What ranks hand back to the launcher: a result file and, on an uncaught exception, error files.

The contract between :mod:`launcher.mpirun` (which makes the folder and reads it) and the ranks
(which write it), after torch.distributed.elastic's ``record`` / ``ErrorHandler``: results and
errors travel as small JSON files in a per-launch folder, never as "the last stdout line" or
patterns in mpirun's stderr (mpirun's own stderr stays in the log, for humans).

- The launcher makes a fresh folder (mode 0700) for every launch and names it to the ranks in
  ``FRAMESTREAM_RUN_DIR`` (:data:`RUN_DIR_ENV`).
- Rank 0 of a job that runs to completion writes ``result.json``: one JSON object.
- A rank whose main raises writes ``error-rank<R>.json`` before it aborts the job, in torch
  elastic's layout plus where it happened::

      {"message": {"message": "ValueError: bad x",
                   "extraInfo": {"py_callstack": "Traceback ...", "timestamp": "1764640000"}},
       "rank": 1, "host": "node-a", "pid": 4242}

- The launcher reports the first failing rank: the error file with the earliest timestamp (the
  rank that raised first; the others usually fail because it aborted the job).

JSON only (no pickle), written atomically (a reader never sees half a file), at most
:data:`MAX_FILE_BYTES` read back (a file past that is reported, not loaded). Without
``FRAMESTREAM_RUN_DIR`` (a rank started by hand) nothing is written.
"""

from __future__ import annotations

import json
import os
import socket
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from framestream.atomic import PRIVATE, write_atomic

RUN_DIR_ENV = "FRAMESTREAM_RUN_DIR"
RESULT_FILE = "result.json"
MAX_FILE_BYTES = 1 << 20  # a result or a traceback, not a dataset
_MAX_CALLSTACK = 64 * 1024


def run_dir() -> Path | None:
    """The folder this rank's launcher named, or None when it was started without one."""
    value = os.environ.get(RUN_DIR_ENV)
    return Path(value) if value else None


def error_path(folder: Path, rank: int) -> Path:
    return Path(folder) / f"error-rank{rank}.json"


def write_result(result: dict[str, Any], rank: int = 0) -> Path | None:
    """Rank 0's result for the launcher (other ranks write nothing); returns the path written."""
    folder = run_dir()
    if folder is None or rank != 0:
        return None
    path = Path(folder) / RESULT_FILE
    write_atomic(path, json.dumps(result), fsync=False, mode=PRIVATE)
    return path


def write_error(exc: BaseException, rank: int) -> Path | None:
    """Record ``exc`` (being handled: its traceback is the current one) as this rank's error file.

    Never raises: a rank that is failing must still reach its abort.
    """
    folder = run_dir()
    if folder is None:
        return None
    callstack = traceback.format_exc()
    data = {"message": {"message": f"{type(exc).__name__}: {exc}"[:4096],
                        "extraInfo": {"py_callstack": callstack[-_MAX_CALLSTACK:],
                                      "timestamp": str(int(time.time())),
                                      "timestamp_ns": str(time.time_ns())}},
            "rank": rank, "host": socket.gethostname(), "pid": os.getpid()}
    path = error_path(folder, rank)
    try:
        write_atomic(path, json.dumps(data), fsync=False, mode=PRIVATE)
    except OSError:
        return None
    return path


def clear(folder: Path) -> None:
    """Remove the run files a previous launch left in ``folder`` (a reused folder must never
    report an old result or an old failure as this launch's)."""
    folder = Path(folder)
    for path in [folder / RESULT_FILE, *folder.glob("error-rank*.json")]:
        path.unlink(missing_ok=True)


@dataclass(frozen=True)
class RankError:
    """One rank's error file, read back."""

    rank: int
    host: str
    pid: int
    message: str
    callstack: str
    timestamp_ns: int
    path: Path


def _load(path: Path) -> Any:
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise ValueError(f"{path} holds {size} bytes, more than the {MAX_FILE_BYTES} a run file "
                         f"may hold")
    return json.loads(path.read_text())


def read_result(folder: Path) -> dict[str, Any] | None:
    """Rank 0's result, or None when it wrote none. ValueError for a file that is not one."""
    path = Path(folder) / RESULT_FILE
    if not path.exists():
        return None
    data = _load(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds {type(data).__name__}, not a JSON object")
    return data


def read_errors(folder: Path) -> list[RankError]:
    """Every rank's error file, the first failure first. A file that cannot be read is reported
    as an error of its own (its rank from the name), never skipped."""
    errors = []
    for path in sorted(Path(folder).glob("error-rank*.json")):
        rank_s = path.stem.removeprefix("error-rank")
        rank = int(rank_s) if rank_s.isdigit() else -1
        try:
            data = _load(path)
            msg = data["message"]
            info = msg.get("extraInfo", {})
            stamp = int(info.get("timestamp_ns") or int(info.get("timestamp", 0)) * 10**9)
            errors.append(RankError(int(data.get("rank", rank)), str(data.get("host", "")),
                                    int(data.get("pid", 0)), str(msg["message"]),
                                    str(info.get("py_callstack", "")), stamp, path))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            errors.append(RankError(rank, "", 0, f"unreadable error file: {exc}", "", 2**63, path))
    return sorted(errors, key=lambda e: (e.timestamp_ns, e.rank))
