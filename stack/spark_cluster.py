"""A Spark standalone cluster on network-namespace hosts: ``python -m stack spark up|down|status``.

Layout (:mod:`stack.netns` hosts on the bridge ``fsbr<name>``, ``10.203.<subnet>.0/24``)::

    host 1  fsspark1  10.203.S.2   Master  spark://10.203.S.2:7077, web UI and JSON on :8080
    host 2  fsspark2  10.203.S.3   Worker  1 core, worker UI :8081
    host 3  fsspark3  10.203.S.4   Worker  1 core, worker UI :8081
    gateway           10.203.S.1   this machine's own namespace: where a driver runs
                                   (FRAMESTREAM_SPARK_BIND_ADDRESS=10.203.S.1)

Each daemon is ``spark-class org.apache.spark.deploy.{master.Master,worker.Worker}`` run with
``ip netns exec``, bound to its host's address (``--host``, ``SPARK_LOCAL_IP``), with its own
properties file under the cluster's home (``$FRAMESTREAM_STATE/spark-cluster`` by default): the
file's path on the daemon's command line is how ``down`` and ``status`` recognise this cluster's
processes (and no one else's) from another process. Executors are children of their worker (the
same process group), so ``down`` ends them with it.

What runs on the executors must be importable there: the venv's Python (the driver's
``PYSPARK_PYTHON``) with framestream installed. The daemons get this process's environment
without any ``FRAMESTREAM_*`` variable: executors receive their settings with each task, and a
Kafka password file path never becomes a worker's environment.
"""

from __future__ import annotations

import json
import logging
import os
import random
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

from framestream.errors import DeadlineExceeded, ServiceError
from stack.netns import NamespaceHosts

log = logging.getLogger(__name__)

MASTER_PORT, MASTER_UI_PORT, WORKER_UI_PORT = 7077, 8080, 8081
_MAIN = {"master": "org.apache.spark.deploy.master.Master",
         "worker": "org.apache.spark.deploy.worker.Worker"}
#: a direct opener: the master's JSON is on the bridge, never behind the user's HTTP proxy
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def spark_class() -> str:
    """The venv's ``spark-class`` (pyspark ships it next to the interpreter)."""
    path = Path(sys.executable).with_name("spark-class")
    if not path.exists():
        raise ServiceError(f"no spark-class next to {sys.executable}: install pyspark into the "
                           f"venv (make setup)")
    return str(path)


class SparkCluster:
    """A master and ``workers`` workers, each on a namespace host of its own.

    ``up`` / ``down`` / ``status``; ``kill(role)`` / ``start(role)`` for one daemon, where a role
    is ``"master"`` or ``"worker<k>"`` (1-based)."""

    def __init__(self, home: Path, name: str | None = None, subnet: int | None = None,
                 workers: int = 2, worker_cores: int = 1, worker_memory: str = "1g",
                 daemon_heap: str = "256m") -> None:
        self.home = Path(home)
        state = self._load()
        self.name = name or str(state.get("name") or "") or secrets.token_hex(2)
        self.subnet = int(subnet or state.get("subnet") or random.Random().randint(16, 250))
        self.workers = int(state.get("workers") or workers)
        self.worker_cores, self.worker_memory = worker_cores, worker_memory
        self.daemon_heap = daemon_heap
        self.hosts = NamespaceHosts(self.name, self.subnet, 1 + self.workers, prefix="10.203",
                                    host_prefix="fsspark")
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    # -- layout -----------------------------------------------------------------------------
    def _load(self) -> dict[str, object]:
        try:
            return dict(json.loads((self.home / "cluster.json").read_text()))
        except (FileNotFoundError, ValueError):
            return {}

    @property
    def roles(self) -> list[str]:
        return ["master", *(f"worker{k}" for k in range(1, self.workers + 1))]

    def host_of(self, role: str) -> int:
        """The namespace host (1-based) a role runs on: the master on 1, worker k on k + 1."""
        if role == "master":
            return 1
        if role.startswith("worker") and role[6:].isdigit() and 1 <= int(role[6:]) <= self.workers:
            return int(role[6:]) + 1
        raise ValueError(f"no role {role!r} in this cluster: one of {', '.join(self.roles)}")

    def ip(self, role: str) -> str:
        return self.hosts.ips[self.host_of(role) - 1]

    @property
    def master_ip(self) -> str:
        return self.ip("master")

    @property
    def master_url(self) -> str:
        """What ``spark-submit --master`` takes."""
        return f"spark://{self.master_ip}:{MASTER_PORT}"

    @property
    def ui_url(self) -> str:
        return f"http://{self.master_ip}:{MASTER_UI_PORT}"

    @property
    def worker_ips(self) -> list[str]:
        return [self.ip(r) for r in self.roles[1:]]

    @property
    def driver_ip(self) -> str:
        """The bridge's gateway: this machine's own namespace, where a driver binds."""
        return self.hosts.gateway_ip

    def driver_env(self) -> dict[str, str]:
        """What a driver on this machine needs to be reachable from the executors' hosts, and
        its ranks with it: the driver (``spark.driver.bindAddress``/``host``, its endpoint
        directory) and the ranks it starts (``FRAMESTREAM_SERVE_BIND``, which requires CURVE
        keys) bind the gateway address."""
        return {"FRAMESTREAM_SPARK_BIND_ADDRESS": self.driver_ip, "SPARK_LOCAL_IP": self.driver_ip,
                "FRAMESTREAM_SERVE_BIND": self.driver_ip}

    def driver_conf(self, event_log: Path | None = None) -> dict[str, str]:
        """``spark-submit --conf`` for a driver on this cluster: every worker's core, and no job
        before all executors registered (so the first tasks spread over the hosts); with
        ``event_log``, Spark's event log there, uncompressed (see :func:`event_log_hosts`)."""
        conf = {"spark.cores.max": str(self.workers * self.worker_cores),
                "spark.scheduler.minRegisteredResourcesRatio": "1.0",
                "spark.scheduler.maxRegisteredResourcesWaitingTime": "120s"}
        if event_log is not None:
            conf.update({"spark.eventLog.enabled": "true", "spark.eventLog.dir": event_log.as_uri(),
                         "spark.eventLog.compress": "false",
                         "spark.eventLog.rolling.enabled": "false"})
        return conf

    def role_home(self, role: str) -> Path:
        return self.home / role

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "subnet": self.subnet, "workers": self.workers,
                "master": self.master_url, "ui": self.ui_url, "worker_ips": self.worker_ips,
                "driver_ip": self.driver_ip}

    # -- one daemon -------------------------------------------------------------------------
    def _properties_file(self, role: str) -> Path:
        path = self.role_home(role) / "spark-daemon.conf"
        path.parent.mkdir(parents=True, exist_ok=True)
        # nothing secret here; the file marks the daemon as this cluster's (see pid())
        path.write_text(f"# {role} of framestream's Spark cluster {self.name}\n"
                        "spark.ui.reverseProxy false\n")
        return path

    def command(self, role: str) -> list[str]:
        """The daemon's command line, run in its namespace host (``ip netns exec`` execs, and so
        does ``spark-class``: the Popen's pid is the JVM's)."""
        ip, home = self.ip(role), self.role_home(role)
        args = ["--host", ip, "--properties-file", str(self._properties_file(role))]
        if role == "master":
            args += ["--port", str(MASTER_PORT), "--webui-port", str(MASTER_UI_PORT)]
        else:
            args += ["--cores", str(self.worker_cores), "--memory", self.worker_memory,
                     "--webui-port", str(WORKER_UI_PORT), "--work-dir", str(home / "work"),
                     self.master_url]
        kind = "master" if role == "master" else "worker"
        return [*self.hosts.exec_prefix(self.host_of(role)), spark_class(), _MAIN[kind], *args]

    def environment(self, role: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMESTREAM_")}
        ip = self.ip(role)
        env.update(SPARK_LOCAL_IP=ip, SPARK_LOCAL_HOSTNAME=ip, SPARK_PUBLIC_DNS=ip,
                   SPARK_DAEMON_MEMORY=self.daemon_heap,
                   SPARK_LOG_DIR=str(self.role_home(role) / "logs"),
                   SPARK_WORKER_DIR=str(self.role_home(role) / "work"),
                   PYSPARK_PYTHON=sys.executable)
        env.pop("SPARK_MASTER_HOST", None)
        return env

    def pid(self, role: str) -> int | None:
        """The pid of this cluster's ``role`` daemon if it is alive (read from its pid file when
        another process started it; trusted only when its command line names our file)."""
        proc = self.procs.get(role)
        if proc is not None:
            return proc.pid if proc.poll() is None else None
        try:
            pid = int((self.role_home(role) / "daemon.pid").read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (FileNotFoundError, ValueError):
            return None
        marker = str(self.role_home(role) / "spark-daemon.conf").encode()
        return pid if marker in cmdline.split(b"\0") else None

    def start(self, role: str) -> None:
        if self.pid(role) is not None:
            return
        home = self.role_home(role)
        (home / "logs").mkdir(parents=True, exist_ok=True)
        with open(home / "daemon.out", "ab") as out:
            proc = subprocess.Popen(self.command(role), env=self.environment(role), stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        self.procs[role] = proc
        (home / "daemon.pid").write_text(str(proc.pid))
        log.info("spark %s started, pid %d, %s", role, proc.pid, self.ip(role))

    def kill(self, role: str) -> None:
        """SIGKILL the daemon and its process group (a worker's executors and their Python
        workers): a host that dies."""
        self._signal(role, signal.SIGKILL, 10.0)

    def stop(self, role: str, timeout_s: float = 20.0) -> None:
        """SIGTERM the daemon's process group; SIGKILL what is left after ``timeout_s``."""
        if not self._signal(role, signal.SIGTERM, timeout_s):
            self._signal(role, signal.SIGKILL, 10.0)

    def _signal(self, role: str, sig: int, timeout_s: float) -> bool:
        pid = self.pid(role)
        if pid is None:
            return True
        try:
            os.killpg(pid, sig)  # start_new_session: the daemon leads its own group
        except ProcessLookupError:
            return True
        gone = wait_group_gone(pid, self.procs.get(role), timeout_s)
        if gone:
            (self.role_home(role) / "daemon.pid").unlink(missing_ok=True)
        return gone

    # -- the cluster ------------------------------------------------------------------------
    def up(self, timeout_s: float = 120.0) -> "SparkCluster":
        """Make the hosts, start the master, then the workers; wait until all are registered."""
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "cluster.json").write_text(json.dumps(self.describe()))
        try:
            for role in self.roles:  # leftovers of a crashed run of this same cluster
                self.stop(role, timeout_s=10.0)
            self.hosts.down()
            self.hosts.up()
            self.start("master")
            self.wait_workers(0, timeout_s)  # the master answers
            for role in self.roles[1:]:
                self.start(role)
            self.wait_workers(self.workers, timeout_s)
        except BaseException:
            self.down()
            raise
        log.info("Spark cluster %s up: master %s, workers %s", self.name, self.master_url,
                 self.worker_ips)
        return self

    def master_state(self, timeout_s: float = 5.0) -> dict[str, object]:
        """The master's JSON (``/json/``): workers, their state, cores used, applications."""
        with _DIRECT.open(f"{self.ui_url}/json/", timeout=timeout_s) as answer:
            return dict(json.loads(answer.read(4 << 20)))

    def alive_workers(self, state: dict[str, object] | None = None) -> list[str]:
        """Hosts of the workers the master counts as ALIVE."""
        state = self.master_state() if state is None else state
        return sorted(str(w["host"]) for w in state.get("workers", [])  # type: ignore[union-attr]
                      if w.get("state") == "ALIVE")

    def wait_workers(self, count: int, timeout_s: float) -> None:
        """Until the master answers and ``count`` workers are ALIVE in its JSON."""
        deadline = time.monotonic() + timeout_s
        seen: list[str] = []
        while True:
            dead = [r for r, p in self.procs.items() if p.poll() is not None]
            if dead:
                raise ServiceError(f"Spark {dead[0]} of cluster {self.name} exited during "
                                   f"start-up (exit {self.procs[dead[0]].returncode}); see "
                                   f"{self.role_home(dead[0])}\n{self.log_tail(dead[0])}")
            try:
                seen = self.alive_workers()
                if len(seen) >= count:
                    return
            except (OSError, ValueError) as exc:  # not listening yet
                log.debug("Spark master not ready: %s", exc)
            if time.monotonic() > deadline:
                raise DeadlineExceeded("python -m stack spark up",
                                       f"the Spark master at {self.ui_url} to list {count} "
                                       f"ALIVE workers (saw {seen})", timeout_s,
                                       detail=self.log_tail("master"))
            time.sleep(0.5)  # the JVMs start and register on their own; poll to the deadline

    def log_tail(self, role: str, lines: int = 15) -> str:
        out = []
        for path in sorted((self.role_home(role) / "logs").glob("*.out")) + [
                self.role_home(role) / "daemon.out"]:
            if path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {path}:\n" + "\n".join(text))
        return "\n".join(out)

    def down(self) -> None:
        """Stop this cluster's daemons (workers first, with their executors) and remove its
        hosts; logs and work folders are kept under the home."""
        for role in reversed(self.roles):
            self.stop(role)
        self.hosts.down()

    def status(self) -> dict[str, int | None]:
        return {role: self.pid(role) for role in self.roles}


def event_log_hosts(folder: Path) -> tuple[set[str], Counter[str]]:
    """From the Spark event logs under ``folder``: the hosts executors were added on, and how
    many tasks finished on each host."""
    executors: set[str] = set()
    tasks: Counter[str] = Counter()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        for line in path.read_text(errors="replace").splitlines():
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except ValueError:  # the last line of a log still being written
                continue
            if event.get("Event") == "SparkListenerExecutorAdded":
                executors.add(event["Executor Info"]["Host"])
            elif event.get("Event") == "SparkListenerTaskEnd":
                tasks[event["Task Info"]["Host"]] += 1
    return executors, tasks


def wait_group_gone(pgid: int, proc: subprocess.Popen[bytes] | None,
                    timeout_s: float) -> bool:
    """Until no process is left in group ``pgid`` (the daemon reaped if it is our child)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if proc is not None:
            proc.poll()  # reap our child, or its zombie keeps the group alive
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)  # a process group cannot be waited on; poll until the deadline
