"""Replace a file so that a reader sees the old content or the new one, never half of either.

Used for every small file another process polls: the ranks' endpoint set, the registry's
``serving.json`` and manifests, training checkpoints, model-version pins, launcher records.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: Path | str, data: bytes | str, fsync: bool = True) -> None:
    """Write ``data`` to a temp file beside ``path`` (creating the folder), then rename it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
