"""Which model version each micro-batch runs with, kept beside the Spark checkpoint.

The driver pins a version when a micro-batch first runs; when Spark replays that batch after a
crash (same batch id, same offsets) the same version answers, so a replayed offset gets the same
prediction. One small file per batch id, written atomically; old pins are pruned.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from framestream.atomic import write_atomic

KEEP = 1000


class VersionPins:
    def __init__(self, directory: Path | str) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)

    def _path(self, batch_id: int) -> Path:
        return self.dir / f"{batch_id:012d}.json"

    def get(self, batch_id: int) -> str | None:
        try:
            return json.loads(self._path(batch_id).read_text())["model_version"]
        except FileNotFoundError:
            return None

    def pin(self, batch_id: int, choose: Callable[[], str]) -> str:
        """The version pinned for ``batch_id``; pins ``choose()`` when there is none yet."""
        existing = self.get(batch_id)
        if existing is not None:
            return existing
        version = choose()
        write_atomic(self._path(batch_id), json.dumps(
            {"batch_id": batch_id, "model_version": version, "pinned_at": time.time()}))
        self._prune(batch_id)
        return version

    def _prune(self, batch_id: int) -> None:
        if batch_id % 100 == 0:
            for path in sorted(self.dir.glob("*.json"))[:-KEEP]:
                path.unlink(missing_ok=True)
