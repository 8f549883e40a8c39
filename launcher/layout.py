"""From reserved bundles to an mpirun layout: hostfile, rank order, per-rank environment, MCA.

Pure functions: the holders (:mod:`launcher.holders`) report where each bundle landed, this
module decides how mpirun uses it, :mod:`launcher.mpirun` turns it into a command line.

- Hostfile: one line per node, ``<node ip> slots=<bundles on it>``: the launcher's own node first
  (mpirun always maps its own node first), then the others in the order of their first bundle.
  mpirun maps ranks by slot in that order, so rank ``r`` belongs to bundle ``rank_bundles[r]``.
- Per-rank environment (applied by :mod:`launcher.rank_exec` before the rank's program starts,
  found by the rank's node address and its local rank there, so it never depends on mpirun's
  numbering):
  ``CUDA_VISIBLE_DEVICES`` from the bundle's GPUs ("" when it has none, so a rank never touches a
  GPU it did not reserve), ``FRAMESTREAM_GANG_BUNDLE`` / ``FRAMESTREAM_GANG_NODE_IP``; when the
  gang reaches past the launcher's node, also the node's address for ZeroMQ
  (``FRAMESTREAM_SERVE_BIND``) and its interface for gloo/NCCL (``GLOO_SOCKET_IFNAME``,
  ``NCCL_SOCKET_IFNAME``), unless those are set already.
- Across nodes: mpirun starts its daemon on the other nodes with ``plm_rsh_agent`` (no tree spawn,
  the agent runs next to mpirun), MPI's TCP traffic stays on the nodes' common subnet, and
  torch.distributed meets at rank 0's node address (each rank's ``FRAMESTREAM_MPI_RENDEZVOUS_HOST``
  is its own node's; rank 0's is the one used).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

RANK_ENV = "FRAMESTREAM_GANG_RANK_ENV"  # JSON {node ip: [{name: value} per local rank]}


@dataclass(frozen=True)
class NodeAddress:
    """An address of a node as seen on that node: IP, the interface holding it, its subnet."""

    ip: str
    iface: str = ""
    cidr: str = ""


@dataclass(frozen=True)
class BundleInfo:
    """Where one bundle of the placement group landed, as its holder actor reported it."""

    index: int
    node_id: str
    address: NodeAddress
    hostname: str
    gpu_ids: tuple[str, ...] = ()
    pid: int = 0

    @property
    def node_ip(self) -> str:
        return self.address.ip

    def to_dict(self) -> dict[str, object]:
        return {"index": self.index, "node_id": self.node_id, "node_ip": self.node_ip,
                "iface": self.address.iface, "cidr": self.address.cidr, "hostname": self.hostname,
                "gpu_ids": list(self.gpu_ids), "holder_pid": self.pid}


@dataclass(frozen=True)
class MpiLayout:
    """Everything mpirun needs to start the gang on its reservation."""

    hosts: tuple[tuple[str, int], ...]          # (node ip, slots) in hostfile order
    rank_bundles: tuple[int, ...]               # rank -> bundle index
    rank_env: tuple[dict[str, str], ...]        # rank -> environment for that rank
    env: dict[str, str] = field(default_factory=dict)   # for every rank (exported with -x)
    mca: dict[str, str] = field(default_factory=dict)
    remote: bool = False                        # some rank runs on another node than mpirun

    @property
    def ranks(self) -> int:
        return len(self.rank_bundles)

    def hostfile_text(self) -> str:
        return "".join(f"{host} slots={slots}\n" for host, slots in self.hosts)

    def rank_hosts(self) -> list[str]:
        order = [h for h, slots in self.hosts for _ in range(slots)]
        return order[: self.ranks]


def plan(bundles: list[BundleInfo], launcher: NodeAddress, *, rsh_agent: str | None = None,
         if_include: str = "", environ: Mapping[str, str] | None = None) -> MpiLayout:
    """Lay the gang out on its bundles. ``launcher``: the node mpirun runs on; ``rsh_agent``:
    the command OpenMPI uses to reach other nodes (None = OpenMPI's default, ssh)."""
    if not bundles:
        raise ValueError("a gang needs at least one bundle")
    environ = environ or {}
    by_node: dict[str, list[BundleInfo]] = {}
    ours = [b for b in bundles if b.node_ip == launcher.ip]
    for b in sorted(ours, key=lambda b: b.index) + sorted(
            (b for b in bundles if b.node_ip != launcher.ip), key=lambda b: b.index):
        by_node.setdefault(b.node_ip, []).append(b)
    hosts = tuple((ip, len(bs)) for ip, bs in by_node.items())
    ordered = [b for bs in by_node.values() for b in bs]
    multi_host = len(by_node) > 1
    remote = any(ip != launcher.ip for ip in by_node)
    rank_env: list[dict[str, str]] = []
    for b in ordered:
        env = {"CUDA_VISIBLE_DEVICES": ",".join(b.gpu_ids), "FRAMESTREAM_GANG_BUNDLE": str(b.index),
               "FRAMESTREAM_GANG_NODE_IP": b.node_ip}
        if multi_host:
            env["FRAMESTREAM_MPI_RENDEZVOUS_HOST"] = b.node_ip
        if remote or multi_host:
            env["FRAMESTREAM_SERVE_BIND"] = b.node_ip
            if b.address.iface:
                env["GLOO_SOCKET_IFNAME"] = b.address.iface
                env["NCCL_SOCKET_IFNAME"] = b.address.iface
        rank_env.append({k: v for k, v in env.items() if k not in environ})
    mca: dict[str, str] = {}
    if remote:
        if rsh_agent:
            mca["plm_rsh_agent"] = rsh_agent
        mca["plm_rsh_no_tree_spawn"] = "1"  # only mpirun's node can run the agent
        nets = {b.address.cidr for b in ordered} | {launcher.cidr}
        net = if_include or (nets.pop() if len(nets) == 1 and "" not in nets else "")
        if net:
            mca["oob_tcp_if_include"] = net
            mca["btl_tcp_if_include"] = net
    table: dict[str, list[dict[str, str]]] = {}
    for b, env in zip(ordered, rank_env):
        table.setdefault(b.node_ip, []).append(env)
    shared = {RANK_ENV: json.dumps(table, separators=(",", ":"))}
    return MpiLayout(hosts, tuple(b.index for b in ordered), tuple(rank_env), shared, mca, remote)
