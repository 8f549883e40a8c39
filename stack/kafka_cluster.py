"""A 3-broker Kafka cluster with SASL_SSL on network-namespace hosts: ``python -m stack cluster``.

Each broker is a combined broker+controller KRaft node (a 3-voter quorum) in its own network
namespace host (:mod:`stack.netns`), at ``10.202.<subnet>.<k+1>``. Listeners per broker::

    EXTERNAL  SASL_SSL (SCRAM-SHA-512)  :9094   clients: framestream's producer, stream, tools
    INTERNAL  SASL_SSL (SCRAM-SHA-512)  :9095   replication, as user ``admin``
    CONTROLLER SSL, mutual TLS          :9093   the quorum (SCRAM is not offered to controllers)

Made at set-up, under the cluster's home (``$FRAMESTREAM_STATE/kafka-cluster`` by default):
a CA and one certificate per broker (``tls/``, :mod:`stack.kafka_certs`), two SCRAM users
(``admin`` for the brokers, ``framestream`` for clients) whose passwords are random and live only
in 0600 files (``secrets/``) and in each broker's 0600 ``server.properties``; they are stored with
``kafka-storage format --add-scram`` through a 0600 Java argument file, never on a command line.
Topics get replication factor 3 and ``min.insync.replicas`` 2 (so ``acks=all`` survives one broker
down); the client settings are printed as FRAMESTREAM_KAFKA_* lines (a password *file*, never the
password).
"""

from __future__ import annotations

import json
import logging
import os
import random
import secrets
import signal
import subprocess
import time
from pathlib import Path

from framestream.config import KafkaSettings
from framestream.errors import DeadlineExceeded, ServiceError
from framestream.paths import jar_dir
from stack.kafka_broker import _LOG4J2, _java, _wait_gone
from stack.kafka_certs import make_broker_cert, make_ca, write_private
from stack.netns import NamespaceHosts

log = logging.getLogger(__name__)

EXTERNAL_PORT, INTERNAL_PORT, CONTROLLER_PORT = 9094, 9095, 9093
MECHANISM = "SCRAM-SHA-512"
CLIENT_USER, ADMIN_USER = "framestream", "admin"
_SCRAM = "org.apache.kafka.common.security.scram.ScramLoginModule"


class KafkaCluster:
    """Three brokers on three namespace hosts. ``up`` / ``down`` / ``kill(k)`` / ``start(k)``."""

    def __init__(self, home: Path, name: str | None = None, subnet: int | None = None,
                 brokers: int = 3, heap: str = "384m") -> None:
        self.home = Path(home)
        state = self._load()
        self.name = name or state.get("name") or secrets.token_hex(2)
        self.subnet = subnet or state.get("subnet") or random.Random().randint(16, 250)
        self.heap = heap
        self.hosts = NamespaceHosts(self.name, int(self.subnet), brokers, prefix="10.202",
                                    host_prefix="fskafka")
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    # -- layout -----------------------------------------------------------------------------
    def _load(self) -> dict[str, object]:
        try:
            return dict(json.loads((self.home / "cluster.json").read_text()))
        except (FileNotFoundError, ValueError):
            return {}

    @property
    def ids(self) -> range:
        return range(1, self.hosts.count + 1)

    def ip(self, k: int) -> str:
        return self.hosts.ips[k - 1]

    @property
    def bootstrap(self) -> str:
        return ",".join(f"{self.ip(k)}:{EXTERNAL_PORT}" for k in self.ids)

    def broker_home(self, k: int) -> Path:
        return self.home / f"broker{k}"

    @property
    def ca(self) -> Path:
        return self.home / "tls" / "ca.pem"

    def password_file(self, user: str) -> Path:
        return self.home / "secrets" / f"{user}.password"

    def env(self) -> dict[str, str]:
        """The FRAMESTREAM_KAFKA_* settings of a client of this cluster (no secret in them)."""
        return {"FRAMESTREAM_KAFKA_BOOTSTRAP": self.bootstrap,
                "FRAMESTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "FRAMESTREAM_KAFKA_SASL_MECHANISM": MECHANISM,
                "FRAMESTREAM_KAFKA_SASL_USERNAME": CLIENT_USER,
                "FRAMESTREAM_KAFKA_SASL_PASSWORD_FILE": str(self.password_file(CLIENT_USER)),
                "FRAMESTREAM_KAFKA_SSL_CAFILE": str(self.ca)}

    def settings(self, **overrides: object) -> KafkaSettings:
        values = {k.removeprefix("FRAMESTREAM_KAFKA_").lower(): v for k, v in self.env().items()}
        return KafkaSettings(**{**values, **overrides})  # type: ignore[arg-type]

    # -- set-up -----------------------------------------------------------------------------
    def _properties(self, k: int) -> str:
        ip, data = self.ip(k), self.broker_home(k) / "data"
        admin_pw = self.password_file(ADMIN_USER).read_text().strip()
        internal = ("offsets.topic", "transaction.state.log", "share.coordinator.state.topic")
        props = {
            "process.roles": "broker,controller", "node.id": str(k),
            "controller.quorum.voters": ",".join(f"{j}@{self.ip(j)}:{CONTROLLER_PORT}"
                                                 for j in self.ids),
            "listeners": f"EXTERNAL://{ip}:{EXTERNAL_PORT},INTERNAL://{ip}:{INTERNAL_PORT},"
                         f"CONTROLLER://{ip}:{CONTROLLER_PORT}",
            "advertised.listeners": f"EXTERNAL://{ip}:{EXTERNAL_PORT},"
                                    f"INTERNAL://{ip}:{INTERNAL_PORT}",
            "listener.security.protocol.map": "EXTERNAL:SASL_SSL,INTERNAL:SASL_SSL,CONTROLLER:SSL",
            "inter.broker.listener.name": "INTERNAL", "controller.listener.names": "CONTROLLER",
            "sasl.enabled.mechanisms": MECHANISM,
            "sasl.mechanism.inter.broker.protocol": MECHANISM,
            f"listener.name.internal.{MECHANISM.lower()}.sasl.jaas.config":
                f'{_SCRAM} required username="{ADMIN_USER}" password="{admin_pw}";',
            f"listener.name.external.{MECHANISM.lower()}.sasl.jaas.config": f"{_SCRAM} required;",
            "listener.name.controller.ssl.client.auth": "required",
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(self.home / "tls" / f"{self.hosts.hostname(k)}.pem"),
            "ssl.truststore.type": "PEM", "ssl.truststore.location": str(self.ca),
            "log.dirs": str(data), "num.partitions": "4",
            "default.replication.factor": "3", "min.insync.replicas": "2",
            "auto.create.topics.enable": "false", "delete.topic.enable": "true",
            "group.initial.rebalance.delay.ms": "0", "offsets.topic.num.partitions": "4",
            **{f"{t}.replication.factor": "3" for t in internal},
            **{f"{t}.min.isr": "2" for t in internal[1:]},
        }
        return "".join(f"{key}={value}\n" for key, value in props.items())

    def _java_args(self, k: int, main: str, *args: str) -> list[str]:
        home = self.broker_home(k)
        return [f"-Xmx{self.heap}", f"-Dlog4j2.configurationFile={home / 'log4j2.properties'}",
                "-cp", f"{jar_dir('kafka-broker')}/*", main, *args]

    def _configure(self) -> None:
        """CA, certificates, passwords, properties; format each broker's storage once."""
        (self.home / "secrets").mkdir(parents=True, exist_ok=True, mode=0o700)
        for user in (ADMIN_USER, CLIENT_USER):
            if not self.password_file(user).exists():
                write_private(self.password_file(user), secrets.token_urlsafe(24) + "\n")
        tls = self.home / "tls"
        if not self.ca.exists():
            ca_pem, ca_key = make_ca(tls)
            for k in self.ids:
                make_broker_cert(tls, ca_pem, ca_key, self.hosts.hostname(k), self.ip(k))
        idfile = self.home / "cluster.id"
        if not idfile.exists():
            out = subprocess.run([_java(), *self._java_args(1, "kafka.tools.StorageTool",
                                                            "random-uuid")],
                                 check=True, capture_output=True, text=True, timeout=60)
            idfile.write_text(out.stdout.strip().splitlines()[-1])
        for k in self.ids:
            home = self.broker_home(k)
            (home / "logs").mkdir(parents=True, exist_ok=True)
            (home / "log4j2.properties").write_text(_LOG4J2.format(logfile=home / "logs" /
                                                                    "server.log"))
            write_private(home / "server.properties", self._properties(k))
            if (home / "data" / "meta.properties").exists():
                continue
            scram = [a for user in (ADMIN_USER, CLIENT_USER) for a in (
                "--add-scram", f"{MECHANISM}=[name={user},password="
                               f"{self.password_file(user).read_text().strip()}]")]
            argfile = home / "format.args"  # the passwords stay off every command line
            write_private(argfile, "\n".join(self._java_args(
                k, "kafka.tools.StorageTool", "format", "-t", idfile.read_text().strip(),
                "-c", str(home / "server.properties"), *scram)) + "\n")
            try:
                got = subprocess.run([_java(), f"@{argfile}"], capture_output=True, text=True,
                                     timeout=120)
            finally:
                argfile.unlink(missing_ok=True)
            if got.returncode != 0:
                raise ServiceError(f"formatting broker {k}'s storage failed: "
                                   f"{got.stdout[-1500:]}{got.stderr[-1500:]}")

    # -- lifecycle --------------------------------------------------------------------------
    def pid(self, k: int) -> int | None:
        proc = self.procs.get(k)
        if proc is not None:
            return proc.pid if proc.poll() is None else None
        try:
            pid = int((self.broker_home(k) / "broker.pid").read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (FileNotFoundError, ValueError):
            return None
        ok = b"kafka.Kafka" in cmdline and str(self.broker_home(k)).encode() in cmdline
        return pid if ok else None

    def start(self, k: int) -> None:
        """Start broker ``k`` in its namespace host (its data and credentials are kept)."""
        if self.pid(k) is not None:
            return
        home = self.broker_home(k)
        cmd = [*self.hosts.exec_prefix(k), _java(),
               *self._java_args(k, "kafka.Kafka", str(home / "server.properties"))]
        with open(home / "broker.out", "ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs[k] = proc
        (home / "broker.pid").write_text(str(proc.pid))
        log.info("broker %d started, pid %d, %s", k, proc.pid, self.ip(k))

    def kill(self, k: int) -> None:
        """SIGKILL broker ``k``: a host that dies, not one that shuts down."""
        pid = self.pid(k)
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            _wait_gone(pid, self.procs.get(k), 10.0)
            log.info("broker %d (pid %d) killed", k, pid)

    def stop(self, k: int, timeout: float = 30.0) -> None:
        pid = self.pid(k)
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        if not _wait_gone(pid, self.procs.get(k), timeout):
            os.kill(pid, signal.SIGKILL)
            _wait_gone(pid, self.procs.get(k), 10.0)

    def up(self, timeout_s: float = 150.0) -> "KafkaCluster":
        """Make the hosts, the certificates and the users; start the brokers; wait for all 3."""
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "cluster.json").write_text(json.dumps({"name": self.name,
                                                            "subnet": self.subnet}))
        try:
            self.hosts.down()  # leftovers of a crashed run of the same cluster
            self.hosts.up()
            self._configure()
            for k in self.ids:
                self.start(k)
            self.wait_brokers(self.hosts.count, timeout_s)
        except BaseException:
            self.down()
            raise
        return self

    def wait_brokers(self, count: int, timeout_s: float) -> None:
        """Until ``count`` brokers are in the cluster's metadata (asked over SASL_SSL)."""
        from framestream.kafka_admin import admin_client

        deadline = time.monotonic() + timeout_s
        seen = 0
        while True:
            dead = [k for k in self.ids if k in self.procs and self.procs[k].poll() is not None]
            if dead:
                raise ServiceError(f"Kafka broker(s) {dead} exited during start-up; see "
                                   f"{self.broker_home(dead[0]) / 'logs' / 'server.log'}\n"
                                   + self.log_tail(dead[0]))
            try:
                with admin_client(self.settings(), timeout=5.0) as admin:
                    seen = len(admin.describe_cluster().get("brokers") or [])
                if seen >= count:
                    return
            except Exception as exc:  # not up yet: any client error means "ask again"
                log.debug("cluster not ready: %s", exc)
            if time.monotonic() > deadline:
                raise DeadlineExceeded("python -m stack cluster up", f"{count} Kafka brokers to "
                                       f"join (saw {seen})", timeout_s,
                                       detail=self.log_tail(1))
            time.sleep(1.0)  # brokers register with the quorum on their own; poll to the deadline

    def log_tail(self, k: int, lines: int = 15) -> str:
        path = self.broker_home(k) / "logs" / "server.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def down(self) -> None:
        """Stop every broker of this cluster (only theirs) and remove its hosts; data is kept."""
        for k in self.ids:
            self.stop(k, timeout=15.0)
        self.hosts.down()

    def status(self) -> dict[int, int | None]:
        return {k: self.pid(k) for k in self.ids}
