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


from framestream.errors import ConfigError
from framestream.settings import Section, section, setting

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


class LauncherSettings(Section):
    """A gang of ranks on Ray: its shape, the reservation's patience, supervision."""

    model_config = section("launcher")

    ranks: int = setting(2, "ranks in the gang", ok=lambda v: 1 <= v <= 4096, expected="1..4096")
    cpus_per_rank: float = setting(1.0, "CPUs reserved per rank (Ray bundle)",
                                   ok=lambda v: v > 0, expected="> 0")
    gpus_per_rank: float = setting(0.0, "GPUs reserved per rank (Ray bundle)",
                                   ok=lambda v: v >= 0, expected=">= 0")
    resources_per_rank: str = setting(
        "", "other Ray resources per rank: name=amount[,name=amount]",
        ok=lambda v: parse_resources(v) is not None,
        expected="name=amount[,name=amount] with amounts > 0")
    strategy: str = setting("PACK", "Ray placement strategy of the gang",
                            ok=lambda v: v in STRATEGIES, expected=" | ".join(STRATEGIES))
    timeout_s: float = setting(60.0, "seconds to wait for the placement group per try",
                               ok=lambda v: v > 0, expected="> 0 seconds")
    retries: int = setting(2, "reservation retries after a timeout",
                           ok=lambda v: 0 <= v <= 1000, expected="0..1000")
    backoff_s: float = setting(2.0, "first backoff between retries and restarts (doubles, jittered)",
                               ok=lambda v: v >= 0, expected=">= 0 seconds")
    backoff_max_s: float = setting(30.0, "longest backoff", ok=lambda v: v >= 0,
                                   expected=">= 0 seconds")
    jitter: float = setting(0.2, "relative jitter of each backoff", ok=lambda v: 0 <= v < 1,
                            expected="0 <= jitter < 1")
    restarts: int = setting(3, "relaunches of a failed gang before giving up",
                            ok=lambda v: 0 <= v <= 1000, expected="0..1000")
    holder_timeout_s: float = setting(60.0, "seconds to wait for the actors that hold the "
                                            "reservation to start",
                                      ok=lambda v: v > 0, expected="> 0 seconds")
    launch_timeout_s: float = setting(120.0, "seconds launched ranks have to publish endpoints",
                                      ok=lambda v: v > 0, expected="> 0 seconds")
    rsh_timeout_s: float = setting(120.0, "seconds mpirun's remote start may take per node",
                                   ok=lambda v: v > 0, expected="> 0 seconds")
    rsh_agent: str = setting("ray", "how mpirun reaches other nodes: ray, or a command such as ssh",
                             ok=lambda v: bool(v.strip()), expected="ray, or a command such as ssh")
    mpi_if_include: str = setting("", "network MPI's TCP traffic uses (btl/oob_tcp_if_include); "
                                      "empty = the nodes' common subnet")

    def bundle(self) -> dict[str, float]:
        """One rank's bundle of Ray resources."""
        b = {"CPU": float(self.cpus_per_rank)}
        if self.gpus_per_rank:
            b["GPU"] = float(self.gpus_per_rank)
        b.update(parse_resources(self.resources_per_rank))
        return b
