"""What every benchmark shares: the machine description, the result file, timing and statistics.

A result is one JSON file ``bench/results/<name>-<timestamp>.json``::

    {"name": "stream", "started": "...", "profile": "quick", "params": {...every parameter...},
     "machine": {...CPU, cores, memory, GPU, versions, load average at start and end...},
     "results": {...raw samples and their medians...}, "notes": [...], "plots": ["...png"]}

Benchmarks measure; they never assert. Warm-up is excluded from every figure and the JSON says so.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from framestream.paths import REPO

log = logging.getLogger(__name__)

RESULTS = REPO / "bench" / "results"
TMP = RESULTS / "tmp"  # scratch (logs, checkpoints): git-ignored
PACKAGES = ("torch", "torchvision", "numpy", "pillow", "pyspark", "pyarrow", "pandas",
            "kafka-python", "pyzmq", "msgpack", "mpi4py", "ray", "horovod", "matplotlib")
GPU_PENDING = ("pending: this run had no GPU (the GPU grid needs a session on a GPU machine; "
               "run `python -m bench.stream --device cuda` there; ranks then share the GPU)")


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _command_version(cmd: Sequence[str], pattern: str) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
        m = re.search(pattern, out.stdout + out.stderr)
        return m.group(1) if m else "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "missing"


def gpu_description() -> dict[str, Any]:
    try:
        import torch

        if torch.cuda.is_available():
            return {"available": True, "count": torch.cuda.device_count(),
                    "name": torch.cuda.get_device_name(0), "cuda": torch.version.cuda}
    except Exception as exc:  # a broken CUDA install is still "no GPU" for a benchmark
        return {"available": False, "error": f"{type(exc).__name__}: {exc}"}
    return {"available": False, "grid": GPU_PENDING}


def machine() -> dict[str, Any]:
    """CPU, cores, memory, GPU, software versions and the git commit benchmarked."""
    import psutil

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    versions["python"] = platform.python_version()
    versions["java"] = _command_version(["java", "-version"], r'version "([^"]+)"')
    from launcher.mpirun import mpirun_version  # the one module that runs mpirun

    versions["openmpi"] = mpirun_version()
    try:
        from framestream.paths import jars

        broker = [p.name for p in jars("kafka-broker") if p.name.startswith("kafka_2")]
        versions["kafka_broker"] = broker[0].removesuffix(".jar") if broker else "unknown"
    except Exception:  # no jars: the benchmark needs none of them to describe the machine
        versions["kafka_broker"] = "unknown"
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.split("\n")
    except (OSError, subprocess.TimeoutExpired):
        commit, dirty = "", []
    return {"git_uncommitted": [line[3:] for line in dirty if line.strip()],"hostname": platform.node(), "platform": platform.platform(), "cpu": _cpu_model(),
            "logical_cores": os.cpu_count(), "physical_cores": psutil.cpu_count(logical=False),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "gpu": gpu_description(), "versions": versions, "git_commit": commit}


@dataclass
class Run:
    """One benchmark run: collects results and writes the JSON (and names the PNGs beside it)."""

    name: str
    params: dict[str, Any]
    profile: str = "full"
    stamp: str = field(default_factory=lambda: time.strftime("%Y%m%d-%H%M%S"))
    results: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.started = time.time()
        self.machine = machine()
        self.machine["loadavg_start"] = loadavg()
        RESULTS.mkdir(parents=True, exist_ok=True)
        TMP.mkdir(parents=True, exist_ok=True)
        log.info("%s: load average %s at start", self.name, self.machine["loadavg_start"])

    @property
    def path(self) -> Path:
        return RESULTS / f"{self.name}-{self.stamp}.json"

    def png(self, what: str) -> Path:
        path = RESULTS / f"{self.name}-{self.stamp}-{what}.png"
        self.plots.append(path.name)
        return path

    def scratch(self, what: str) -> Path:
        path = TMP / f"{self.name}-{self.stamp}" / what
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def save(self) -> Path:
        self.machine["loadavg_end"] = loadavg()
        doc = {"name": self.name, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z",
                                                           time.localtime(self.started)),
               "wall_s": round(time.time() - self.started, 1), "profile": self.profile,
               "params": self.params, "machine": self.machine, "results": self.results,
               "notes": self.notes, "plots": self.plots}
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(doc, indent=1, default=_jsonable) + "\n")
        tmp.replace(self.path)
        log.info("wrote %s", self.path)
        return self.path


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def median(values: Iterable[float | None]) -> float | None:
    xs = [v for v in values if v is not None]
    return statistics.median(xs) if xs else None


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100), linear interpolation; None for no values."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def latest(name: str) -> dict[str, Any] | None:
    """The newest ``bench/results/<name>-*.json``, or None."""
    files = sorted(RESULTS.glob(f"{name}-*.json"))
    return json.loads(files[-1].read_text()) if files else None


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("urllib3", "matplotlib", "py4j", "etl.client"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # kafka-python logs ERROR with a traceback when a consumer closes while a metadata request is
    # in flight (read_topic's consumer, every burst): noise; failures surface as timeouts here.
    logging.getLogger("kafka").setLevel(logging.CRITICAL)


def wait_until(predicate: Any, timeout: float, what: str, poll: float = 0.25) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout:.0f}s waiting for {what}")
        time.sleep(poll)
