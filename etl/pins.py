"""Which model version each micro-batch runs with, kept beside the Spark checkpoint.

The driver pins a version when a micro-batch first runs; when Spark replays that batch after a
crash (same batch id, same offsets) the same version answers, so a replayed offset gets the same
prediction. One small file per batch id, written whole (temp file, then rename); old pins are
pruned.

The checkpoint is a local folder or a URI (``file://``, ``hdfs://``, ``s3a://``, ...). A URI goes
through Hadoop's FileSystem API in the driver's JVM, like Spark's own checkpoint, so a driver
restarted on another host finds the pins where Spark finds the offsets. A rename onto an existing
pin fails there, so the first pin of a batch id stays (a second writer reads it back).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from framestream.atomic import write_atomic

KEEP = 1000
PINS_DIR = "framestream-pins"
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def is_uri(location: str) -> bool:
    """``hdfs://nn/x``, ``s3a://b/x``, ``file:///x`` are URIs; ``/x`` and ``rel/x`` are not."""
    return bool(_URI.match(location)) and not re.match(r"^[A-Za-z]:[\\/]", location)


class LocalStore:
    """Pins in a local folder."""

    def __init__(self, directory: Path | str) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)

    def read(self, name: str) -> bytes | None:
        try:
            return (self.dir / name).read_bytes()
        except FileNotFoundError:
            return None

    def write(self, name: str, data: bytes) -> None:
        write_atomic(self.dir / name, data)

    def names(self) -> list[str]:
        return sorted(p.name for p in self.dir.glob("*.json"))

    def delete(self, name: str) -> None:
        (self.dir / name).unlink(missing_ok=True)


class HadoopStore:
    """Pins under a URI, through Hadoop's FileSystem API in ``spark``'s JVM."""

    def __init__(self, uri: str, spark: Any) -> None:
        jvm = spark._jvm
        self._Path = jvm.org.apache.hadoop.fs.Path
        self._io = jvm.org.apache.commons.io.IOUtils
        self.root = self._Path(uri)
        self.fs = self.root.getFileSystem(spark._jsc.hadoopConfiguration())
        self.fs.mkdirs(self.root)

    def read(self, name: str) -> bytes | None:
        path = self._Path(self.root, name)
        if not self.fs.exists(path):
            return None
        stream = self.fs.open(path)
        try:
            return bytes(self._io.toByteArray(stream))
        finally:
            stream.close()

    def write(self, name: str, data: bytes) -> None:
        tmp = self._Path(self.root, f".{name}.{uuid.uuid4().hex}.tmp")
        out = self.fs.create(tmp, True)
        try:
            out.write(bytearray(data))
        finally:
            out.close()
        if not self.fs.rename(tmp, self._Path(self.root, name)):  # the name exists: first wins
            self.fs.delete(tmp, False)

    def names(self) -> list[str]:
        return sorted(s.getPath().getName() for s in self.fs.listStatus(self.root)
                      if s.getPath().getName().endswith(".json"))

    def delete(self, name: str) -> None:
        self.fs.delete(self._Path(self.root, name), False)


class VersionPins:
    def __init__(self, directory: Path | str | None = None, store: Any = None) -> None:
        self.store = store if store is not None else LocalStore(directory or ".")

    @property
    def dir(self) -> Path:
        """The local folder of the pins (a URI checkpoint's pins have none)."""
        return self.store.dir

    @classmethod
    def beside(cls, checkpoint: str, spark: Any = None) -> "VersionPins":
        """The pins of the checkpoint at ``checkpoint`` (a folder, or a URI read through
        ``spark``'s Hadoop FileSystem)."""
        if is_uri(checkpoint):
            if spark is None:
                raise ValueError(f"checkpoint {checkpoint!r} is a URI: pins need the Spark session")
            return cls(store=HadoopStore(checkpoint.rstrip("/") + "/" + PINS_DIR, spark))
        return cls(Path(checkpoint) / PINS_DIR)

    @staticmethod
    def _name(batch_id: int) -> str:
        return f"{batch_id:012d}.json"

    def get(self, batch_id: int) -> str | None:
        data = self.store.read(self._name(batch_id))
        return None if data is None else json.loads(data)["model_version"]

    def pin(self, batch_id: int, choose: Callable[[], str]) -> str:
        """The version pinned for ``batch_id``; pins ``choose()`` when there is none yet."""
        existing = self.get(batch_id)
        if existing is not None:
            return existing
        self.store.write(self._name(batch_id), json.dumps(
            {"batch_id": batch_id, "model_version": choose(), "pinned_at": time.time()}).encode())
        self._prune(batch_id)
        pinned = self.get(batch_id)  # what the store kept: ours, or a first writer's
        assert pinned is not None
        return pinned

    def _prune(self, batch_id: int) -> None:
        if batch_id % 100 == 0:
            for name in self.store.names()[:-KEEP]:
                self.store.delete(name)
