"""Where the stream finds the ranks: the endpoint set that rank 0 publishes.

After every rank has bound its ZeroMQ socket, rank 0 gathers the endpoints over MPI and writes
them to one JSON file (atomically: temp file + rename), with a generation number that grows with
every (re)launch. The stream driver reads it at each micro-batch and hands it to the executors;
executors ask the driver for it again (:mod:`etl.directory`) when the ranks they know stop
answering: they never read the file. A new generation replaces the old.

    {"generation": 3, "model_version": "v0002", "published": 1700000000.0, "job": "…",
     "ranks": [{"rank": 0, "endpoint": "tcp://127.0.0.1:40123", "host": "vm", "pid": 123,
                "device": "cpu", "metrics": "http://127.0.0.1:40200/metrics"}, …]}
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from framestream.atomic import write_atomic
from framestream.errors import DeadlineExceeded


@dataclass(frozen=True)
class RankEndpoint:
    rank: int
    endpoint: str
    host: str
    pid: int
    device: str = "cpu"
    metrics: str = ""


@dataclass(frozen=True)
class EndpointSet:
    generation: int
    ranks: tuple[RankEndpoint, ...]
    model_version: str | None = None
    published: float = field(default_factory=time.time)
    job: str = ""

    def to_json(self) -> str:
        d = asdict(self)
        d["ranks"] = [asdict(r) for r in self.ranks]
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EndpointSet":
        ranks = tuple(RankEndpoint(**r) for r in d["ranks"])
        return cls(int(d["generation"]), ranks, d.get("model_version"), float(d["published"]),
                   d.get("job", ""))

    @property
    def endpoints(self) -> list[str]:
        return [r.endpoint for r in self.ranks]


def publish(path: Path, endpoints: EndpointSet) -> None:
    """Write atomically, so a reader sees the old set or the new one, never half of one."""
    write_atomic(path, endpoints.to_json())


def read(path: Path) -> EndpointSet | None:
    """The published set, or None when nothing is published (yet)."""
    try:
        return EndpointSet.from_dict(json.loads(Path(path).read_text()))
    except FileNotFoundError:
        return None


def wait_for(path: Path, timeout: float, newer_than: int = -1, setting: str = "") -> EndpointSet:
    """Wait until a set with ``generation > newer_than`` is published."""
    deadline = time.monotonic() + timeout
    while True:
        current = read(path)
        if current is not None and current.generation > newer_than:
            return current
        if time.monotonic() > deadline:
            raise DeadlineExceeded("the stream", f"ranks to publish endpoints (generation > "
                                   f"{newer_than}) in {path}", timeout, setting or None)
        time.sleep(0.1)  # the publisher is another process: poll the file until the deadline
