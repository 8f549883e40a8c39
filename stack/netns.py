"""Hosts on one machine: each a network namespace with its own IP on a bridge (needs root + iproute2).

This machine stays in its own namespace and owns the bridge's first address (``.1``, the hosts'
gateway); host ``k`` (1-based) is namespace ``fs<name>n<k>`` at ``<prefix>.<subnet>.<k+1>``.
``ip netns exec`` mounts ``/etc/netns/<ns>/hosts`` over ``/etc/hosts``, so the hosts know each
other by name without a DNS server (unreachable from the namespace: 10 s timeouts in every
reverse lookup). Used by the Ray/MPI loopback cluster (tests/multinode/loopback.py) and the Kafka
cluster (stack/kafka_cluster.py).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

from framestream.errors import ServiceError


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), check=check, capture_output=True, text=True, timeout=30)


class NamespaceHosts:
    """A bridge ``fsbr<name>`` and ``count`` namespace hosts on it, named ``<host_prefix><k>``."""

    def __init__(self, name: str, subnet: int, count: int, prefix: str = "10.201",
                 host_prefix: str = "fsnode") -> None:
        self.name, self.subnet, self.count = name, subnet, count
        self.host_prefix = host_prefix
        self.bridge = f"fsbr{name}"
        self.gateway_ip = f"{prefix}.{subnet}.1"
        self.ips = [f"{prefix}.{subnet}.{k + 2}" for k in range(count)]

    def namespace(self, k: int) -> str:
        return f"fs{self.name}n{k}"

    def hostname(self, k: int) -> str:
        return f"{self.host_prefix}{k}"

    def exec_prefix(self, k: int) -> list[str]:
        """Prefix of a command line that runs in host ``k``'s namespace (it execs: same pid)."""
        return ["ip", "netns", "exec", self.namespace(k)]

    def up(self) -> None:
        if os.geteuid() != 0 or not shutil.which("ip"):
            raise ServiceError("namespace hosts need root and `ip` (iproute2) for network "
                               "namespaces")
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        sh("ip", "addr", "add", f"{self.gateway_ip}/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        for k, ip in enumerate(self.ips, 1):
            ns, veth = self.namespace(k), f"fs{self.name}v{k}"
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "add", veth, "type", "veth", "peer", "name", f"{veth}p")
            sh("ip", "link", "set", f"{veth}p", "netns", ns)
            sh("ip", "netns", "exec", ns, "ip", "link", "set", f"{veth}p", "name", "eth0")
            sh("ip", "link", "set", veth, "master", self.bridge)
            sh("ip", "link", "set", veth, "up")
            self._name_service(ns)
            for cmd in (["ip", "addr", "add", f"{ip}/24", "dev", "eth0"],
                        ["ip", "link", "set", "eth0", "up"], ["ip", "link", "set", "lo", "up"],
                        ["ip", "route", "add", "default", "via", self.gateway_ip]):
                sh("ip", "netns", "exec", ns, *cmd)

    def _name_service(self, ns: str) -> None:
        etc = Path("/etc/netns") / ns
        etc.mkdir(parents=True, exist_ok=True)
        names = [f"{self.gateway_ip} {socket.gethostname()}"] + [
            f"{ip} {self.hostname(k)}" for k, ip in enumerate(self.ips, 1)]
        (etc / "hosts").write_text("127.0.0.1 localhost\n" + "\n".join(names) + "\n")
        (etc / "resolv.conf").write_text("# framestream namespace host: no DNS server here\n"
                                         "options timeout:1 attempts:1\n")

    def down(self) -> None:
        """Remove the namespaces, their /etc/netns files, the veths and the bridge (idempotent)."""
        for k in range(1, self.count + 1):
            sh("ip", "netns", "del", self.namespace(k), check=False)
            shutil.rmtree(Path("/etc/netns") / self.namespace(k), ignore_errors=True)
            sh("ip", "link", "del", f"fs{self.name}v{k}", check=False)
        sh("ip", "link", "del", self.bridge, check=False)
