"""Every launcher setting in one place: ``FRAMESTREAM_LAUNCHER_<NAME>``; CLI flags map onto them.

| setting | flag | default | does |
|---|---|---|---|
| ranks | ``--ranks`` | 2 | ranks in the gang (one bundle each) |
| cpus_per_rank | ``--cpus-per-rank`` | 1 | logical CPUs per bundle |
| gpus_per_rank | ``--gpus-per-rank`` | 0 | GPUs per bundle (ranks see them as CUDA_VISIBLE_DEVICES) |
| resources_per_rank | ``--resource`` | "" | custom Ray resources per bundle, ``name=amount[,name=amount]`` |
| strategy | ``--strategy`` | PACK | PACK, SPREAD, STRICT_PACK or STRICT_SPREAD |
| timeout_s | ``--timeout`` | 60 | seconds one reservation attempt waits for the whole gang |
| retries | ``--retries`` | 2 | attempts after the first, each after releasing and a jittered backoff |
| backoff_s / backoff_max_s / jitter | | 2 / 30 / 0.2 | backoff between attempts and relaunches |
| restarts | ``--restarts`` | 3 | relaunches of a failed gang before giving up |
| holder_timeout_s | | 60 | seconds the bundle holders may take to start and report |
| launch_timeout_s | | 120 | seconds serving ranks may take to publish their endpoints |
| rsh_agent | | ray | how mpirun starts its daemon on other nodes: ``ray`` (through the holder actor on that node, no ssh needed) or a command for OpenMPI's ``plm_rsh_agent`` (e.g. ``ssh``) |
| rsh_timeout_s | | 120 | seconds the ``ray`` agent waits for the daemon to start on a node |
| mpi_if_include | | "" | network (CIDR or interface) for MPI's TCP traffic across nodes; "" = the nodes' common subnet |
"""

from __future__ import annotations

from dataclasses import dataclass, field

from framestream.errors import ConfigError
from framestream.settings import check, settings_section

STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


def parse_resources(text: str, setting: str = "FRAMESTREAM_LAUNCHER_RESOURCES_PER_RANK"
                    ) -> dict[str, float]:
    """``"fs_gpu_box=1,memory=1e9"`` -> ``{"fs_gpu_box": 1.0, "memory": 1e9}``."""
    out: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        name, sep, amount = part.partition("=")
        try:
            value = float(amount)
        except ValueError:
            value = -1.0
        if not sep or not name.strip() or value <= 0:
            raise ConfigError(setting, text, "name=amount[,name=amount] with amounts > 0")
        out[name.strip()] = value
    return out


@settings_section("launcher")
@dataclass(frozen=True)
class LauncherSettings:
    ranks: int = field(default=2, metadata=check(lambda v: 1 <= v <= 4096, "1..4096"))
    cpus_per_rank: float = field(default=1.0, metadata=check(lambda v: v > 0, "> 0"))
    gpus_per_rank: float = field(default=0.0, metadata=check(lambda v: v >= 0, ">= 0"))
    resources_per_rank: str = field(default="", metadata=check(
        lambda v: parse_resources(v) is not None, "name=amount[,name=amount] with amounts > 0"))
    strategy: str = field(default="PACK", metadata=check(lambda v: v in STRATEGIES,
                                                         " | ".join(STRATEGIES)))
    timeout_s: float = field(default=60.0, metadata=check(lambda v: v > 0, "> 0 seconds"))
    retries: int = field(default=2, metadata=check(lambda v: 0 <= v <= 1000, "0..1000"))
    backoff_s: float = field(default=2.0, metadata=check(lambda v: v >= 0, ">= 0 seconds"))
    backoff_max_s: float = field(default=30.0, metadata=check(lambda v: v >= 0, ">= 0 seconds"))
    jitter: float = field(default=0.2, metadata=check(lambda v: 0 <= v < 1, "0 <= jitter < 1"))
    restarts: int = field(default=3, metadata=check(lambda v: 0 <= v <= 1000, "0..1000"))
    holder_timeout_s: float = field(default=60.0, metadata=check(lambda v: v > 0, "> 0 seconds"))
    launch_timeout_s: float = field(default=120.0, metadata=check(lambda v: v > 0, "> 0 seconds"))
    rsh_timeout_s: float = field(default=120.0, metadata=check(lambda v: v > 0, "> 0 seconds"))
    rsh_agent: str = field(default="ray", metadata=check(lambda v: bool(v.strip()),
                                                         "ray, or a command such as ssh"))
    mpi_if_include: str = ""

    def bundle(self) -> dict[str, float]:
        """One rank's bundle of Ray resources."""
        b = {"CPU": float(self.cpus_per_rank)}
        if self.gpus_per_rank:
            b["GPU"] = float(self.gpus_per_rank)
        b.update(parse_resources(self.resources_per_rank))
        return b
