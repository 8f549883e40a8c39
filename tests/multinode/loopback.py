"""A real multi-node Ray cluster on one machine: ``python -m tests.multinode.loopback up|down``.

The head runs in this machine's network namespace on a bridge address; every worker node runs in
its own network namespace (its own IP on that bridge) and UTS namespace (its own host name), so
to Ray, to mpirun and to torch.distributed it is another host: mpirun must start a daemon there
through its launch agent, MPI and gloo talk TCP across the bridge, and nothing can quietly take
the shared-memory shortcut. Each node is a real ``ray start`` with its own ``--num-cpus`` and a
custom resource naming it (``fs_head``, ``fs_node1``, ...). Needs root and ``ip`` (iproute2).

    python -m tests.multinode.loopback up --workers 1 --head-cpus 1 --worker-cpus 1   # prints the address
    python -m launcher run mpi_workers.selfcheck --address <it> --ranks 2 --strategy STRICT_SPREAD
    python -m tests.multinode.loopback down --name <it>

Ray 2.60 turns token authentication on when a token exists: ``up`` makes sure one exists
(``ray get-auth-token --generate``) and starts every node with ``RAY_AUTH_MODE=token``; drivers
that join set the same (``launcher.ray_cluster.connect`` does).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from framestream.errors import DeadlineExceeded, ServiceError
from stack.netns import NamespaceHosts

log = logging.getLogger(__name__)
STATE = Path("/tmp/fs-loopback")  # short: Ray's Unix socket paths live under each node's temp dir


def _sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), check=check, capture_output=True, text=True, timeout=30)


class LoopbackCluster:
    def __init__(self, workers: int = 1, head_cpus: float = 1, worker_cpus: float = 1,
                 name: str | None = None, subnet: int | None = None) -> None:
        self.name = name or uuid.uuid4().hex[:4]
        self.workers, self.head_cpus, self.worker_cpus = workers, head_cpus, worker_cpus
        self.subnet = subnet or random.Random().randint(16, 250)
        self.hosts = NamespaceHosts(self.name, self.subnet, workers)  # stack/netns.py
        self.bridge = self.hosts.bridge
        self.head_ip = self.hosts.gateway_ip
        self.worker_ips = self.hosts.ips
        self.dir = STATE / self.name
        self.port = 0
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def address(self) -> str:
        return f"{self.head_ip}:{self.port}"

    def _ray(self) -> str:
        return str(Path(sys.executable).with_name("ray"))

    def _network(self) -> None:
        self.hosts.up()

    def _start(self, cmd: list[str], log_name: str) -> None:
        env = {**os.environ, "RAY_AUTH_MODE": "token"}
        env.pop("RAY_ADDRESS", None)
        with open(self.dir / log_name, "wb") as out:
            self.procs.append(subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                               stdin=subprocess.DEVNULL, start_new_session=True))

    def up(self, timeout_s: float = 120.0) -> str:
        """Create the namespaces, start the head and the workers, wait until all nodes are in."""
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "cluster.json").write_text(json.dumps(self.describe()))
        try:
            _sh(self._ray(), "get-auth-token", "--generate")  # prints the token: not logged
            self._network()
            self.port = _free_port(self.head_ip)
            (self.dir / "cluster.json").write_text(json.dumps(self.describe()))
            common = ["--block", "--disable-usage-stats", "--object-store-memory", "200000000",
                      "--temp-dir", str(self.dir / "ray")]
            self._start([self._ray(), "start", "--head", "--node-ip-address", self.head_ip,
                         "--port", str(self.port), "--num-cpus", f"{self.head_cpus:g}",
                         "--resources", json.dumps({"fs_head": 1}), "--include-dashboard", "false",
                         "--dashboard-agent-listen-port", str(_free_port(self.head_ip)),
                         "--dashboard-agent-grpc-port", str(_free_port(self.head_ip)),
                         "--metrics-export-port", str(_free_port(self.head_ip)),
                         "--runtime-env-agent-port", str(_free_port(self.head_ip)), *common],
                        "head.log")
            self._wait_nodes(1, timeout_s)
            for k, ip in enumerate(self.worker_ips, 1):
                ray_cmd = " ".join([self._ray(), "start", "--address", self.address,
                                    "--node-ip-address", ip, "--num-cpus", f"{self.worker_cpus:g}",
                                    "--resources", f"'{json.dumps({f'fs_node{k}': 1})}'", *common])
                self._start(["ip", "netns", "exec", f"fs{self.name}n{k}", "unshare", "--uts",
                             "sh", "-c", f"hostname fsnode{k} && exec {ray_cmd}"], f"node{k}.log")
            self._wait_nodes(1 + self.workers, timeout_s)
        except BaseException:
            self.down()
            raise
        log.info("loopback Ray cluster %s up at %s: head %s + %s", self.name, self.address,
                 self.head_ip, self.worker_ips)
        return self.address

    def _wait_nodes(self, n: int, timeout_s: float) -> None:
        """Poll ``ray status``-like counts from a throwaway process (this one stays unconnected)."""
        code = ("import ray,sys; ray.init(address=sys.argv[1], log_to_driver=False); "
                "print(sum(1 for x in ray.nodes() if x['Alive']))")
        deadline = time.monotonic() + timeout_s
        env = {**os.environ, "RAY_AUTH_MODE": "token"}
        while True:
            if self.procs and any(p.poll() is not None for p in self.procs):
                raise ServiceError(f"a Ray node of loopback cluster {self.name} exited; see "
                                   f"{self.dir}/*.log")
            try:
                got = subprocess.run([sys.executable, "-c", code, self.address], env=env,
                                     capture_output=True, text=True, timeout=30)
                if got.returncode == 0 and int(got.stdout.strip().splitlines()[-1]) >= n:
                    return
            except (subprocess.TimeoutExpired, ValueError, IndexError):
                pass
            if time.monotonic() > deadline:
                raise DeadlineExceeded("the loopback cluster", f"{n} Ray nodes to join", timeout_s)
            time.sleep(1.0)  # nodes register with the GCS on their own; poll until the deadline

    def down(self) -> None:
        """Stop this cluster's Ray processes (only theirs) and remove its namespaces and bridge."""
        for p in reversed(self.procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5  # a graceful `ray start --block` stop takes 20 s+
        for p in reversed(self.procs):
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)
        _kill_leftovers(str(self.dir))
        self.hosts.down()
        shutil.rmtree(self.dir, ignore_errors=True)

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "address": self.address, "head_ip": self.head_ip,
                "worker_ips": self.worker_ips, "subnet": self.subnet, "workers": self.workers}

    def __enter__(self) -> "LoopbackCluster":
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _kill_leftovers(marker: str) -> None:
    """Ray processes whose command line names this cluster's own temp dir, and nothing else."""
    import psutil

    victims = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        if any(marker in part for part in (p.info["cmdline"] or [])) and p.pid != os.getpid():
            victims.append(p)
    for p in victims:
        p.terminate()
    _, alive = psutil.wait_procs(victims, timeout=10)
    for p in alive:
        p.kill()


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    from framestream.logs import setup_logging

    p = argparse.ArgumentParser(prog="python -m tests.multinode.loopback", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=("up", "down"))
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--head-cpus", type=float, default=1)
    p.add_argument("--worker-cpus", type=float, default=1)
    p.add_argument("--name", help="down: the cluster's name (printed by up)")
    a = p.parse_args(argv)
    setup_logging()
    if a.command == "up":
        cluster = LoopbackCluster(a.workers, a.head_cpus, a.worker_cpus)
        cluster.up()
        print(json.dumps(cluster.describe()), flush=True)
        # `up` keeps the nodes as its children: stay until Ctrl-C / SIGTERM, then take them down
        signal.signal(signal.SIGTERM, _interrupt)
        try:
            while all(proc.poll() is None for proc in cluster.procs):
                time.sleep(1.0)
        except KeyboardInterrupt:
            pass
        cluster.down()
        return 0
    desc = json.loads((STATE / (a.name or "") / "cluster.json").read_text())
    cluster = LoopbackCluster(desc["workers"], name=desc["name"], subnet=desc["subnet"])
    cluster.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
