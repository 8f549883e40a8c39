"""Several real nodes on one machine: a Ray head + a worker node in its own network namespace
(tests.multinode.loopback), and a Spark standalone master + worker.

- ``loopback_ray``: the two-node Ray cluster for the module, with this process connected to it
  (each Launcher of a test joins that connection).
- ``spark_master``: ``spark://127.0.0.1:<port>`` of a standalone master with one worker.
- ``curve_keys``: ZeroMQ CURVE keys for ranks that bind their node's address (what a rank
  reachable from other hosts requires), exported as the FRAMESTREAM_SERVE_/CLIENT_ settings.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port


@pytest.fixture(scope="module")
def loopback_ray() -> Iterator[object]:
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip("the loopback cluster needs root and iproute2 (network namespaces)")
    import ray

    from tests.multinode.loopback import LoopbackCluster
    from launcher.ray_cluster import RaySettings, connect

    cluster = LoopbackCluster(workers=1, head_cpus=1, worker_cpus=1)
    cluster.up(timeout_s=120)
    try:
        connect(RaySettings(address=cluster.address))
        yield cluster
    finally:
        ray.shutdown()
        cluster.down()


def _spark_class() -> str:
    return str(Path(sys.executable).with_name("spark-class"))


@pytest.fixture(scope="module")
def spark_master(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Spark standalone master and one worker (2 cores) on 127.0.0.1, as ``sbin/start-*`` would."""
    work = tmp_path_factory.mktemp("spark-standalone")
    port, ui = free_port(), free_port()
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1",
           "PYSPARK_PYTHON": sys.executable, "SPARK_LOG_DIR": str(work)}
    procs = []
    try:
        for name, args in (("master", ["org.apache.spark.deploy.master.Master", "--host",
                                       "127.0.0.1", "--port", str(port), "--webui-port", str(ui)]),
                           ("worker", ["org.apache.spark.deploy.worker.Worker", "--host",
                                       "127.0.0.1", "--cores", "2", "--memory", "2g",
                                       "--webui-port", str(free_port()), "--work-dir",
                                       str(work / "work"), f"spark://127.0.0.1:{port}"])):
            with open(work / f"{name}.log", "wb") as out:
                procs.append(subprocess.Popen([_spark_class(), *args], env=env, stdout=out,
                                              stderr=subprocess.STDOUT, start_new_session=True))
        deadline = time.monotonic() + 90
        while True:
            try:
                state = json.load(urllib.request.urlopen(f"http://127.0.0.1:{ui}/json/", timeout=5))
                if state.get("aliveworkers", 0) >= 1:
                    break
            except OSError:
                pass  # the master's web UI is not up yet
            assert all(p.poll() is None for p in procs), (work / "master.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the Spark standalone worker did not register in 90s"
            time.sleep(0.5)  # the JVMs start on their own; poll the master until the deadline
        yield f"spark://127.0.0.1:{port}"
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)


@pytest.fixture
def curve_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from framestream.keys import init

    folder = tmp_path / "keys"
    init(folder, ["executors"])
    monkeypatch.setenv("FRAMESTREAM_SERVE_CURVE_SECRET", str(folder / "server.key_secret"))
    monkeypatch.setenv("FRAMESTREAM_SERVE_CURVE_CLIENTS", str(folder / "clients"))
    monkeypatch.setenv("FRAMESTREAM_CLIENT_CURVE_SERVER_KEY", str(folder / "server.key"))
    monkeypatch.setenv("FRAMESTREAM_CLIENT_CURVE_SECRET", str(folder / "executors.key_secret"))
    return folder
