"""The stream on a Spark standalone cluster whose executors run on other hosts (issue 16 item 1).

Four hosts on one machine (stack/spark_cluster.py, ``python -m stack spark``): the master on
namespace host fsspark1, a worker (1 core) on each of fsspark2 and fsspark3, and the driver in
this machine's own namespace at the bridge's gateway address, bound there
(FRAMESTREAM_SPARK_BIND_ADDRESS). What the executors need must be reachable from their hosts:
a Kafka broker listening on the gateway address (127.0.0.1 of the driver's host is not theirs),
the ranks (started by the driver, ``--ranks 2``, on its host) bound on the gateway address with
CURVE keys, and the driver's endpoint directory (etl/directory.py) on spark.driver.bindAddress.

Spark's event log says where every executor and every task ran; the topics say that every frame
was answered: frames in = predictions + dead letters.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from framestream import endpoints, results
from framestream.config import BrokerSettings
from framestream.hostile import hostile_mix
from framestream.kafka_admin import ensure_topics
from framestream.paths import REPO
from framestream.producer import fashion_frames, mix_in, publish_frames

pytestmark = [pytest.mark.slow, pytest.mark.spark, pytest.mark.kafka, pytest.mark.ray,
              pytest.mark.mpi, pytest.mark.timeout(900)]
VERSION = "random-fashion_cnn"


@pytest.fixture(scope="module")
def spark_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip("the Spark cluster's hosts need root and iproute2 (network namespaces)")
    from stack.spark_cluster import SparkCluster

    state = tmp_path_factory.mktemp("spark-state")
    cluster = SparkCluster(state / "spark-cluster")
    cluster.up(timeout_s=180)
    try:
        yield cluster
    finally:
        cluster.down()


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def bridge_kafka(spark_cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PLAINTEXT broker on the gateway address: the driver and every executor host reach it.
    (The 3-broker SASL_SSL cluster has its own tests: tests/multinode/test_kafka_cluster.py.)"""
    from stack.kafka_broker import KafkaBroker

    ip = spark_cluster.driver_ip
    settings = BrokerSettings.load(host=ip, port=_free_port(ip), controller_port=_free_port(ip),
                                   heap="384m")
    with KafkaBroker(tmp_path_factory.mktemp("bridge-kafka"), settings) as broker:
        yield broker.bootstrap


@pytest.fixture
def topics(bridge_kafka: str) -> dict[str, str]:
    names = {role: f"{role}-{uuid.uuid4().hex[:10]}" for role in ("frames", "predictions", "dlq")}
    ensure_topics(bridge_kafka, list(names.values()), 2)
    return names


def _netns(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/ns/net")


def test_stack_spark_status_sees_the_master_and_both_workers_on_their_own_hosts(
        spark_cluster, tmp_path: Path) -> None:
    cluster = spark_cluster
    assert cluster.alive_workers() == sorted(cluster.worker_ips)
    assert cluster.driver_ip not in {cluster.master_ip, *cluster.worker_ips}
    for role, pid in cluster.status().items():  # every daemon lives in another namespace
        assert pid is not None, role
        assert _netns(pid) != _netns(os.getpid()), role
    got = subprocess.run([sys.executable, "-m", "stack", "spark", "status"],
                         env={**os.environ, "FRAMESTREAM_STATE": str(cluster.home.parent),
                              "PYTHONPATH": str(REPO)},
                         capture_output=True, text=True, timeout=60, cwd=REPO)
    assert got.returncode == 0, got.stdout + got.stderr
    assert f"master {cluster.master_url} lists 2 ALIVE worker(s)" in got.stdout, got.stdout
    assert got.stdout.count("running, pid") == 3


def _submit(cluster, bootstrap: str, topics: dict[str, str], tmp_path: Path,
            *extra: str) -> tuple[list[str], dict[str, str]]:
    """spark-submit of the stream against the cluster, the driver bound on the gateway."""
    from tests.stream.helpers import SPARK_SUBMIT, stream_env

    env = {**stream_env(), **cluster.driver_env(),  # + the CURVE settings of curve_keys
           "FRAMESTREAM_STATE": str(tmp_path / "state"),
           "FRAMESTREAM_SPARK_LOG_LEVEL": "INFO"}  # "Connecting to master" proves the mode
    events = tmp_path / "events"
    events.mkdir()
    conf = {**cluster.driver_conf(event_log=events), "spark.ui.enabled": "false",
            "spark.executor.memory": "768m",
            # TEST ONLY: the shared venv's editable install points at another checkout; the
            # executors must run this one's code. A clone whose `make setup` installed it (CI)
            # needs no PYTHONPATH: the executors find the installed package.
            "spark.executorEnv.PYTHONPATH": str(REPO)}
    cmd = [SPARK_SUBMIT, "--master", cluster.master_url,
           *(a for k, v in conf.items() for a in ("--conf", f"{k}={v}")),
           str(REPO / "jobs/stream_classify.py"), "--ranks", "2", "--rank-threads", "1",
           "--version", VERSION, "--bootstrap", bootstrap, "--topic", topics["frames"],
           "--predictions-topic", topics["predictions"], "--dlq-topic", topics["dlq"],
           "--checkpoint", str(tmp_path / "checkpoint"),
           "--endpoints", str(tmp_path / "endpoints.json"), *extra]
    return cmd, env


def _where_it_ran(tmp_path: Path) -> tuple[set[str], Counter[str]]:
    """Hosts of the executors and of every finished task, from Spark's event log."""
    from stack.spark_cluster import event_log_hosts

    assert list((tmp_path / "events").iterdir()), "Spark wrote no event log"
    return event_log_hosts(tmp_path / "events")


def _audit(bootstrap: str, topics: dict[str, str], n_good: int, n_bad: int) -> results.Summary:
    """Frames in = predictions + dead letters, offset by offset, no offset answered twice."""
    preds = results.read_topic(bootstrap, topics["predictions"], timeout=60)
    dlq = results.read_topic(bootstrap, topics["dlq"], timeout=60)
    summary = results.summarize(n_good + n_bad, preds, dlq)
    assert (summary.predictions, summary.dead_letters) == (n_good, n_bad), summary.lines()
    assert summary.conflicting == 0, summary.lines()
    source = {(r.partition, r.offset) for r in results.read_topic(bootstrap, topics["frames"])}
    answered = {(json.loads(r.value)["partition"], json.loads(r.value)["offset"]) for r in preds}
    dead = {(int(results.headers_of(r)["fs-dlq-partition"]),
             int(results.headers_of(r)["fs-dlq-offset"])) for r in dlq}
    assert answered | dead == source and not answered & dead
    return summary


def _frames(n_good: int, n_bad: int):  # type: ignore[no-untyped-def]
    bad = [(h.kind, h.data, h.expect.value) for h in hostile_mix(n_bad, seed=16)]
    return mix_in(fashion_frames(n_good), bad, n_good)


def test_stream_runs_on_executors_of_two_other_hosts_and_answers_every_frame(
        spark_cluster, bridge_kafka, topics, curve_keys, tmp_path: Path) -> None:
    cluster = spark_cluster
    n_good, n_bad = 400, 8
    assert publish_frames(bridge_kafka, topics["frames"],
                          _frames(n_good, n_bad)).sent == n_good + n_bad
    cmd, env = _submit(cluster, bridge_kafka, topics, tmp_path, "--available-now",
                       "--request-timeout", "10")
    log = tmp_path / "stream.log"
    with open(log, "wb") as out:
        code = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                              timeout=600).returncode
    text = log.read_text(errors="replace")
    assert code == 0, text[-4000:]
    assert f"Connecting to master {cluster.master_url}" in text, text[-3000:]

    executors, tasks = _where_it_ran(tmp_path)
    assert executors == set(cluster.worker_ips), executors  # one on each worker host
    assert set(tasks) == set(cluster.worker_ips), tasks     # every task there, none on the driver's
    for k in (1, 2):  # each worker launched an executor of this application
        assert list((cluster.role_home(f"worker{k}") / "work").glob("app-*/*/stderr")), k
    ranks = endpoints.read(tmp_path / "endpoints.json").ranks
    assert {r.endpoint.split(":")[1].lstrip("/") for r in ranks} == {cluster.driver_ip}

    summary = _audit(bridge_kafka, topics, n_good, n_bad)
    print("\n".join(summary.lines()), f"\ntasks per host: {dict(tasks)}")


def test_a_rank_killed_mid_stream_is_followed_by_executors_on_other_hosts(
        spark_cluster, bridge_kafka, topics, curve_keys, tmp_path: Path) -> None:
    """SIGKILL one rank while frames flow: the launcher relaunches the gang (generation 2) and
    the executors, which share no disk with the driver, learn it from the driver's endpoint
    directory; nothing is lost."""
    from tests.stream.helpers import stop_stream, wait_until

    cluster = spark_cluster
    n_good, n_bad = 1500, 6
    total = n_good + n_bad
    cmd, env = _submit(cluster, bridge_kafka, topics, tmp_path, "--request-timeout", "5",
                       "--max-offsets-per-trigger", "200", "--trigger-interval", "0.2")
    log = tmp_path / "stream.log"
    with open(log, "ab") as out:
        stream = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                                  stdin=subprocess.DEVNULL, start_new_session=True)

    def answered() -> int:
        return sum(sum(results.end_offsets(bridge_kafka, t).values())
                   for t in (topics["predictions"], topics["dlq"]))

    sent: list[int] = []
    generation = 0
    try:
        ep_file = tmp_path / "endpoints.json"
        wait_until(ep_file.exists, 300, "the ranks to publish endpoints")
        producer = threading.Thread(target=lambda: sent.append(publish_frames(
            bridge_kafka, topics["frames"], _frames(n_good, n_bad), rate=150).sent))
        producer.start()
        wait_until(lambda: answered() >= 200, 300, "the first 200 answers")
        victim = json.loads(ep_file.read_text())["ranks"][1]
        os.kill(victim["pid"], signal.SIGKILL)
        producer.join(120)
        assert not producer.is_alive() and sent == [total], f"producer sent {sent} of {total}"
        wait_until(lambda: answered() >= total, 300, f"{total} answers after the kill")
        generation = json.loads(ep_file.read_text())["generation"]
    finally:
        code = stop_stream(stream)
    text = log.read_text(errors="replace")
    assert code == 0, text[-4000:]
    assert generation == 2 and '"rank_restarts": 1' in text, text[-3000:]
    # the executors, on other hosts, asked the driver's directory over the bridge
    asked = re.search(r"endpoint directory at tcp://(\S+):\d+ closed: answered (\d+)", text)
    assert asked and asked[1] == cluster.driver_ip and int(asked[2]) > 0, text[-3000:]
    executors, tasks = _where_it_ran(tmp_path)
    assert executors == set(cluster.worker_ips) and set(tasks) == set(cluster.worker_ips)
    summary = _audit(bridge_kafka, topics, n_good, n_bad)
    print("\n".join(summary.lines()), f"\ntasks per host: {dict(tasks)}")
