"""Replace a file so that a reader sees the old content or the new one, never half of either.

Used for every small file another process polls: the ranks' endpoint set, the registry's
``serving.json`` and manifests, training checkpoints, model-version pins, launcher records.

Files are world-readable (0644) unless the caller asks for ``PRIVATE``: executors and ranks may
run as other users on other hosts (issue 16) and must read the endpoint set, ``serving.json`` and
manifests. Nothing secret goes through here (keys and passwords are written by
:mod:`framestream.keys` and checked by :mod:`framestream.security`); checkpoints, run files and
launcher records are private.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


SHARED = 0o644
PRIVATE = 0o600


def write_atomic(path: Path | str, data: bytes | str, fsync: bool = True,
                 mode: int = SHARED) -> None:
    """Write ``data`` to a temp file beside ``path`` (creating the folder), then rename it; the
    file gets ``mode`` (:data:`SHARED` by default, :data:`PRIVATE` for what only we read)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)  # mkstemp makes 0600
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
