"""Serving ranks for tests: ``mpirun -n N python -m mpi_workers.serve`` on a registry, up and
published, killed (process group) when the block ends."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from framestream import endpoints
from framestream.endpoints import EndpointSet
from framestream.paths import REPO
from launcher.mpirun import MpiJob, start_ranks


@dataclass
class ServingRanks:
    proc: MpiJob  # the mpirun job (poll, wait, stop, its run files)
    published: EndpointSet
    endpoints_file: Path
    log: Path

    def read(self) -> EndpointSet:
        return endpoints.read(self.endpoints_file)


@contextmanager
def serving_ranks(tmp_path: Path, registry: Path, n: int = 2, extra: tuple[str, ...] = (),
                  timeout_s: float = 120) -> Iterator[ServingRanks]:
    """Start ``n`` serving ranks on ``registry`` (1 thread each, metrics on free ports) and wait
    at most ``timeout_s`` for their endpoints; the ranks' log is in the error when they fail."""
    ep = tmp_path / "ep.json"
    log = tmp_path / "ranks.log"
    proc = start_ranks("mpi_workers.serve", ["--registry", str(registry), "--threads", "1",
                                             "--endpoints-file", str(ep), "--metrics-port", "0",
                                             *extra], n=n, output=log, run_dir=tmp_path / "run",
                       cwd=REPO)
    try:
        try:
            published = endpoints.wait_for(ep, timeout_s)
        except Exception:
            raise AssertionError(f"ranks did not come up (exit {proc.poll()}):\n"
                                 f"{log.read_text(errors='replace')[-4000:]}") from None
        yield ServingRanks(proc, published, ep, log)
    finally:
        proc.stop()
