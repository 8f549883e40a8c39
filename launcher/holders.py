"""One small Ray actor per bundle: it occupies the bundle, says where it is, and starts mpirun's
daemon on its node when mpirun asks (see :mod:`launcher.rsh`).

The actor asks for exactly its bundle's resources, so nothing else can be scheduled into the
reservation while the gang lives; it reports its node's IP, the interface and subnet that hold
that IP, the host name and the GPU ids Ray gave it. Killing the holders and removing the
placement group is the release.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from framestream.errors import DeadlineExceeded, FramestreamError
from launcher.layout import BundleInfo, NodeAddress

if TYPE_CHECKING:
    from ray.actor import ActorHandle
    from ray.util.placement_group import PlacementGroup

log = logging.getLogger(__name__)


def address_of(ip: str) -> NodeAddress:
    """The interface and subnet holding ``ip`` on this machine (empty when none does)."""
    import ipaddress
    import socket

    import psutil

    for iface, addrs in psutil.net_if_addrs().items():
        for a in addrs:
            if a.family == socket.AF_INET and a.address == ip:
                net = ipaddress.ip_interface(f"{ip}/{a.netmask or '32'}").network
                return NodeAddress(ip, iface, str(net))
    return NodeAddress(ip)


class BundleHolder:
    """The actor's body (made remote by :func:`start_holders`)."""

    def __init__(self, gang: str, index: int) -> None:
        self.gang, self.index = gang, index
        self.children: list[Any] = []

    def info(self) -> dict[str, Any]:
        import os
        import socket

        import ray

        ctx = ray.get_runtime_context()
        ip = ray.util.get_node_ip_address()
        a = address_of(ip)
        return {"index": self.index, "node_id": ctx.get_node_id(), "ip": ip, "iface": a.iface,
                "cidr": a.cidr, "hostname": socket.gethostname(), "pid": os.getpid(),
                "gpu_ids": [str(g) for g in ctx.get_accelerator_ids().get("GPU", [])]}

    def spawn(self, command: str) -> tuple[int, str]:
        """Run a shell command on this node (what ``ssh node command`` would do) and wait for it.

        mpirun's daemon forks itself into the background, so this returns once it has started.
        """
        import subprocess
        import tempfile

        with tempfile.TemporaryFile() as out:
            proc = subprocess.Popen(["/bin/sh", "-c", command], stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            self.children.append(proc)
            code = proc.wait()
            out.seek(0)
            return code, out.read()[-4000:].decode(errors="replace")

    def stop(self) -> None:
        import os
        import signal

        for proc in self.children:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass


def start_holders(pg: "PlacementGroup", bundles: list[dict[str, float]], gang: str,
                  timeout_s: float) -> tuple[list["ActorHandle"], list[BundleInfo]]:
    """Start one holder per bundle and wait (up to ``timeout_s``) until each reports."""
    import ray
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    remote_cls = ray.remote(BundleHolder)
    handles = []
    for i, b in enumerate(bundles):
        custom = {k: v for k, v in b.items() if k not in ("CPU", "GPU")}
        strategy = PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=i)
        handles.append(remote_cls.options(
            num_cpus=b.get("CPU", 0), num_gpus=b.get("GPU", 0), resources=custom,
            scheduling_strategy=strategy, max_concurrency=8, max_restarts=0,
            name=f"{gang}-bundle-{i}", namespace="framestream").remote(gang, i))
    refs = [h.info.remote() for h in handles]
    started = time.monotonic()
    ready, pending = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
    if pending:
        stop_holders(handles)
        raise DeadlineExceeded("the launcher", f"{len(pending)} of {len(refs)} bundle holders of "
                               f"gang {gang} to start", timeout_s,
                               "FRAMESTREAM_LAUNCHER_HOLDER_TIMEOUT_S")
    try:
        infos = ray.get(refs)
    except ray.exceptions.RayError as exc:
        stop_holders(handles)
        raise FramestreamError(f"a bundle holder of gang {gang} died while starting: {exc}") from exc
    log.info("%d bundle holders of %s up in %.2fs", len(handles), gang, time.monotonic() - started)
    return handles, [BundleInfo(d["index"], d["node_id"], NodeAddress(d["ip"], d["iface"], d["cidr"]),
                                d["hostname"], tuple(d["gpu_ids"]), d["pid"]) for d in infos]


def stop_holders(handles: list["ActorHandle"], timeout_s: float = 10.0) -> None:
    """Ask each holder to stop what it started, then kill it (its bundle is then free)."""
    import ray

    try:
        ray.wait([h.stop.remote() for h in handles], num_returns=len(handles), timeout=timeout_s)
    except ray.exceptions.RayError:
        pass  # a holder that is already gone has nothing left to stop
    for h in handles:
        ray.kill(h, no_restart=True)
