"""A real Apache Kafka broker (single-node KRaft, broker+controller in one JVM) on 127.0.0.1.

The jars come from Maven Central (``java/kafka-broker/pom.xml``, fetched by ``make setup``). All of
one broker's files live under one home folder::

    <home>/server.properties  log4j2.properties  cluster.id  broker.pid
    <home>/data/               the KRaft metadata log and topic partitions (formatted once)
    <home>/logs/server.log     the broker's log; broker.out holds its stdout/stderr

``make up`` runs one under ``.state/kafka``; test fixtures run their own under a temp folder on free
ports when none is running.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from framestream.config import BrokerSettings, KafkaSettings
from framestream.errors import DeadlineExceeded, ServiceError
from framestream.paths import jar_dir
from framestream.kafka_admin import broker_answers

log = logging.getLogger(__name__)

_LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = {logfile}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.state.name = state.change.logger
logger.state.level = WARN
"""


def _server_properties(s: BrokerSettings, data: Path) -> str:
    internal = ("offsets.topic", "transaction.state.log", "share.coordinator.state.topic")
    lines = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.bootstrap.servers": f"{s.host}:{s.controller_port}",
        "listeners": f"PLAINTEXT://{s.host}:{s.port},CONTROLLER://{s.host}:{s.controller_port}",
        "advertised.listeners": f"PLAINTEXT://{s.host}:{s.port}",
        "inter.broker.listener.name": "PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(data),
        "num.partitions": "4",
        # Topics are created on purpose (make up, fixtures, jobs.produce): a typo must not make one.
        "auto.create.topics.enable": "false",
        "delete.topic.enable": "true",
        "group.initial.rebalance.delay.ms": "0",
        "offsets.topic.num.partitions": "4",
        **{f"{t}.replication.factor": "1" for t in internal},
        **{f"{t}.min.isr": "1" for t in internal[1:]},
    }
    return "".join(f"{k}={v}\n" for k, v in lines.items())


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).exists():
        raise ServiceError("no `java` found: install a JDK 17+ (make setup installs "
                           "openjdk-17-jre-headless) or set JAVA_HOME")
    return java


class KafkaBroker:
    """One broker process and its home folder. Start, wait until it answers, stop."""

    def __init__(self, home: Path, settings: BrokerSettings | None = None) -> None:
        self.home = Path(home)
        self.settings = settings or BrokerSettings.load()
        self.data = self.home / "data"
        self.logfile = self.home / "logs" / "server.log"
        self.outfile = self.home / "broker.out"
        self.pidfile = self.home / "broker.pid"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return self.settings.bootstrap

    @property
    def kafka(self) -> KafkaSettings:
        """How a client reaches this broker: PLAINTEXT on loopback, whatever FRAMESTREAM_KAFKA_*
        says about security (that is for the cluster framestream talks to, not this one)."""
        return KafkaSettings(bootstrap=self.bootstrap)

    # -- state ----------------------------------------------------------------------------------
    def pid(self) -> int | None:
        """The pid of this home's broker if it is alive, else None (a stale pid file is removed)."""
        if self._proc is not None:  # our own child: no need to trust the pid file
            return self._proc.pid if self._proc.poll() is None else None
        try:
            pid = int(self.pidfile.read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (FileNotFoundError, ValueError):
            return None
        if b"kafka.Kafka" not in cmdline or str(self.home).encode() not in cmdline:
            self.pidfile.unlink(missing_ok=True)
            return None
        return pid

    def running(self) -> bool:
        return self.pid() is not None

    def log_tail(self, lines: int = 20) -> str:
        out = []
        for path in (self.outfile, self.logfile):
            if path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- last lines of {path}:\n" + "\n".join(text))
        return "\n".join(out)

    # -- lifecycle ------------------------------------------------------------------------------
    def _java_cmd(self, main: str, *args: str) -> list[str]:
        return [_java(), f"-Xmx{self.settings.heap}",
                f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
                "-cp", f"{jar_dir('kafka-broker')}/*", main, *args]

    def _configure(self) -> Path:
        (self.home / "logs").mkdir(parents=True, exist_ok=True)
        props = self.home / "server.properties"
        props.write_text(_server_properties(self.settings, self.data))
        (self.home / "log4j2.properties").write_text(_LOG4J2.format(logfile=self.logfile))
        if not (self.data / "meta.properties").exists():
            idfile = self.home / "cluster.id"
            if not idfile.exists():
                out = subprocess.run(self._java_cmd("kafka.tools.StorageTool", "random-uuid"),
                                     check=True, capture_output=True, text=True, timeout=60)
                idfile.write_text(out.stdout.strip())
            log.info("formatting KRaft storage in %s", self.data)
            subprocess.run(self._java_cmd("kafka.tools.StorageTool", "format", "--standalone",
                                          "-t", idfile.read_text().strip(), "-c", str(props)),
                           check=True, capture_output=True, timeout=60)
        return props

    def start(self, timeout: float | None = None) -> "KafkaBroker":
        """Start the broker (unless this home's is already running) and wait until it answers."""
        timeout = timeout or self.settings.start_timeout_s
        if self.running():
            log.info("broker already running (pid %s) at %s", self.pid(), self.bootstrap)
        else:
            if broker_answers(self.kafka, timeout=2.0):
                raise ServiceError(
                    f"a Kafka broker that framestream did not start answers at {self.bootstrap}: "
                    f"use it by setting FRAMESTREAM_KAFKA_BOOTSTRAP={self.bootstrap}, or stop it, "
                    f"or move ours with FRAMESTREAM_BROKER_PORT")
            props = self._configure()
            with open(self.outfile, "ab") as out:
                self._proc = subprocess.Popen(self._java_cmd("kafka.Kafka", str(props)),
                                              stdout=out, stderr=subprocess.STDOUT,
                                              stdin=subprocess.DEVNULL, start_new_session=True)
            self.pidfile.write_text(str(self._proc.pid))
            log.info("started broker pid %s at %s (log %s)", self._proc.pid, self.bootstrap,
                     self.logfile)
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        """Poll the broker with metadata requests until one is answered or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.running():
                raise ServiceError(f"the Kafka broker in {self.home} exited during start-up; "
                                   f"see {self.logfile}\n{self.log_tail()}")
            if broker_answers(self.kafka, timeout=min(5.0, max(0.5, deadline - time.monotonic()))):
                return
            if time.monotonic() >= deadline:
                raise DeadlineExceeded("make up", f"the Kafka broker at {self.bootstrap} to answer "
                                       f"a metadata request", timeout, "FRAMESTREAM_BROKER_START_TIMEOUT_S",
                                       detail=f"see {self.logfile}\n{self.log_tail()}")
            time.sleep(0.25)  # poll interval between metadata probes, bounded by the deadline

    def stop(self, timeout: float | None = None) -> bool:
        """SIGTERM the broker and wait for it (SIGKILL after ``timeout``). False if none ran."""
        timeout = timeout or self.settings.stop_timeout_s
        pid = self.pid()
        if pid is None:
            self.pidfile.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        if not _wait_gone(pid, self._proc, timeout):
            log.warning("broker pid %s ignored SIGTERM for %.0fs; killing it", pid, timeout)
            os.kill(pid, signal.SIGKILL)
            _wait_gone(pid, self._proc, 10.0)
        self.pidfile.unlink(missing_ok=True)
        log.info("stopped broker pid %s", pid)
        return True

    def __enter__(self) -> "KafkaBroker":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _wait_gone(pid: int, proc: subprocess.Popen[bytes] | None, timeout: float) -> bool:
    if proc is not None:
        try:
            proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)  # a non-child cannot be waited on; poll until the deadline
    return False
