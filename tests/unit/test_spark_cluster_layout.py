"""The Spark cluster's layout on namespace hosts (stack/spark_cluster.py), without starting it:
which daemon runs where with which command line and environment, and that ``down``/``status``
from another process only ever recognise this cluster's own daemons."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from stack.spark_cluster import MASTER_PORT, SparkCluster


def test_master_on_host_1_workers_on_their_own_hosts_driver_on_the_gateway(tmp_path: Path) -> None:
    sc = SparkCluster(tmp_path, name="ab12", subnet=77)
    assert sc.roles == ["master", "worker1", "worker2"]
    assert sc.master_ip == "10.203.77.2" and sc.worker_ips == ["10.203.77.3", "10.203.77.4"]
    assert sc.master_url == f"spark://10.203.77.2:{MASTER_PORT}"
    assert sc.driver_ip == "10.203.77.1"  # this machine's namespace: the fourth host
    with pytest.raises(ValueError, match="worker3"):
        sc.host_of("worker3")


def test_each_daemon_runs_in_its_namespace_bound_to_its_address(tmp_path: Path) -> None:
    sc = SparkCluster(tmp_path, name="ab12", subnet=77)
    master = sc.command("master")
    assert master[:4] == ["ip", "netns", "exec", "fsab12n1"]
    assert master[5] == "org.apache.spark.deploy.master.Master"
    assert master[master.index("--host") + 1] == "10.203.77.2"
    worker = sc.command("worker2")
    assert worker[:4] == ["ip", "netns", "exec", "fsab12n3"]
    assert worker[worker.index("--host") + 1] == "10.203.77.4"
    assert worker[worker.index("--cores") + 1] == "1" and worker[-1] == sc.master_url
    assert Path(worker[worker.index("--properties-file") + 1]).is_file()


def test_daemons_get_no_framestream_settings(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAMESTREAM_KAFKA_SASL_PASSWORD_FILE", "/secret/pw")
    env = SparkCluster(tmp_path, name="ab12", subnet=77).environment("worker1")
    assert not [k for k in env if k.startswith("FRAMESTREAM_")]
    assert env["SPARK_LOCAL_IP"] == "10.203.77.3" and env["PATH"] == os.environ["PATH"]


def test_another_process_finds_the_same_cluster_and_only_its_daemons(tmp_path: Path) -> None:
    first = SparkCluster(tmp_path, workers=2)
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "cluster.json").write_text(json.dumps(first.describe()))
    again = SparkCluster(tmp_path)  # as `python -m stack spark down` builds it
    assert (again.name, again.subnet, again.roles) == (first.name, first.subnet, first.roles)
    # a pid file naming a process that is not this cluster's daemon (here: this test) is ignored
    home = again.role_home("worker1")
    home.mkdir(parents=True)
    (home / "daemon.pid").write_text(str(os.getpid()))
    assert again.pid("worker1") is None
    assert again.status() == {"master": None, "worker1": None, "worker2": None}
