"""``make cluster-demo``: the stream across a Spark standalone cluster on namespace hosts.

    python -m stack.cluster_demo [--frames 300] [--bad 6] [--conf KEY=VALUE ...]

Brings up (needs root and iproute2; nothing here is left running afterwards, also on failure or
Ctrl-C):

- a Spark standalone master on namespace host fsspark1 and a worker (1 core) on each of fsspark2
  and fsspark3 (:mod:`stack.spark_cluster`);
- a PLAINTEXT Kafka broker on the bridge's gateway address, which the driver and every executor
  host reach (127.0.0.1 of this machine is not the executors'), with fresh topics;
- ZeroMQ CURVE keys for the ranks and the executors (ranks off loopback require them).

Then it publishes ``--frames`` Fashion-MNIST frames plus ``--bad`` corrupt ones, runs

    spark-submit --master spark://<fsspark1>:7077 jobs/stream_classify.py --ranks 2 --available-now

with the driver in this machine's namespace bound on the gateway address (its 2 ranks, started
by the driver through Ray and mpirun, bind it too), and prints where the executors and tasks ran
(Spark's event log) and the conservation summary: frames in = predictions + dead letters.
Everything of a run stays under ``$FRAMESTREAM_STATE/cluster-demo/<run>`` (logs, event log).

The executors import framestream as installed in the venv (``make setup``), like the ranks.
``--conf KEY=VALUE`` passes more Spark settings to spark-submit (they win over the demo's).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from framestream.config import BrokerSettings
from framestream.exits import entry_point
from framestream.paths import REPO, state_dir

log = logging.getLogger("stack.cluster_demo")


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _run_stream(cmd: list[str], env: dict[str, str], logfile: Path, timeout_s: float) -> int:
    """spark-submit in a process group of its own; whatever is left of the group when it ends
    (its Python driver, the driver's Ray and ranks) is ended too, also on timeout or Ctrl-C."""
    from framestream.errors import DeadlineExceeded
    from stack.spark_cluster import wait_group_gone

    with open(logfile, "ab") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        code = proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        raise DeadlineExceeded("python -m stack.cluster_demo", "the stream (spark-submit) to "
                               "finish", timeout_s, "--timeout",
                               detail=f"see {logfile}") from None
    finally:  # the driver, its JVM, Ray and the ranks share spark-submit's group
        for sig, grace in ((signal.SIGTERM, 60.0), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            if wait_group_gone(proc.pid, proc, grace):
                break
    return code


def demo(frames: int, bad: int, timeout_s: float, extra_conf: dict[str, str]) -> int:
    from framestream import results
    from framestream.hostile import hostile_mix
    from framestream.kafka_admin import ensure_topics
    from framestream.keys import init as init_keys
    from framestream.producer import fashion_frames, mix_in, publish_frames
    from stack.kafka_broker import KafkaBroker
    from stack.spark_cluster import SparkCluster, event_log_hosts

    run = state_dir() / "cluster-demo" / time.strftime("%Y%m%d-%H%M%S")
    run.mkdir(parents=True, exist_ok=True)
    cluster = SparkCluster(run / "spark-cluster")
    broker: KafkaBroker | None = None
    print(f"cluster demo: state in {run}", flush=True)
    try:
        started = time.monotonic()
        cluster.up(timeout_s=180)
        print(f"Spark: master {cluster.master_url}, workers {', '.join(cluster.worker_ips)} "
              f"(up in {time.monotonic() - started:.0f}s); driver on {cluster.driver_ip}",
              flush=True)
        ip = cluster.driver_ip
        broker = KafkaBroker(run / "kafka", BrokerSettings.load(
            host=ip, port=_free_port(ip), controller_port=_free_port(ip), heap="384m")).start()
        topics = {role: f"demo-{role}-{uuid.uuid4().hex[:8]}"
                  for role in ("frames", "predictions", "dlq")}
        ensure_topics(broker.bootstrap, list(topics.values()), 2)
        keys = run / "keys"
        init_keys(keys, ["executors"])
        bad_frames = [(h.kind, h.data, h.expect.value) for h in hostile_mix(bad, seed=16)]
        sent = publish_frames(broker.bootstrap, topics["frames"],
                              mix_in(fashion_frames(frames), bad_frames, frames)).sent
        print(f"Kafka: broker {broker.bootstrap}; published {sent} frames ({bad} corrupt) to "
              f"{topics['frames']}", flush=True)

        env = {**os.environ, **cluster.driver_env(),
               "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
               "FRAMESTREAM_STATE": str(run / "state"), "FRAMESTREAM_LOG_LEVEL": "INFO",
               "FRAMESTREAM_SERVE_CURVE_SECRET": str(keys / "server.key_secret"),
               "FRAMESTREAM_SERVE_CURVE_CLIENTS": str(keys / "clients"),
               "FRAMESTREAM_CLIENT_CURVE_SERVER_KEY": str(keys / "server.key"),
               "FRAMESTREAM_CLIENT_CURVE_SECRET": str(keys / "executors.key_secret")}
        conf = {**cluster.driver_conf(event_log=run / "events"), "spark.ui.enabled": "false",
                "spark.executor.memory": "768m"}
        (run / "events").mkdir()
        conf.update(extra_conf)
        cmd = [str(Path(sys.executable).with_name("spark-submit")), "--master",
               cluster.master_url, *(a for k, v in conf.items() for a in ("--conf", f"{k}={v}")),
               str(REPO / "jobs" / "stream_classify.py"), "--ranks", "2", "--rank-threads", "1",
               "--version", "random-fashion_cnn", "--available-now",
               "--bootstrap", broker.bootstrap, "--topic", topics["frames"],
               "--predictions-topic", topics["predictions"], "--dlq-topic", topics["dlq"],
               "--checkpoint", str(run / "checkpoint"), "--endpoints", str(run / "endpoints.json")]
        print("running: " + " ".join(cmd[:4]) + " ... jobs/stream_classify.py --ranks 2 "
              "--available-now ...", flush=True)
        started = time.monotonic()
        code = _run_stream(cmd, env, run / "stream.log", timeout_s)
        took = time.monotonic() - started
        if code != 0:
            tail = (run / "stream.log").read_text(errors="replace")[-3000:]
            print(f"the stream failed (exit {code}); see {run / 'stream.log'}:\n{tail}")
            return 1
        executors, tasks = event_log_hosts(run / "events")
        summary = results.summarize(sent, results.read_topic(broker.bootstrap,
                                                             topics["predictions"]),
                                    results.read_topic(broker.bootstrap, topics["dlq"]))
        print(f"stream finished in {took:.0f}s (spark-submit to exit, with Ray, the ranks and "
              f"the executors' start-up)")
        print(f"executors on: {', '.join(sorted(executors))}; tasks per host: "
              f"{dict(sorted(tasks.items()))}; driver on {cluster.driver_ip}")
        print("\n".join(summary.lines()))
        print("(the frames were all published before the stream started: frames/s and latency "
              "above include its start-up)", flush=True)
        ok = (summary.predictions + summary.dead_letters == sent and summary.conflicting == 0
              and executors and cluster.driver_ip not in tasks)
        return 0 if ok else 1
    finally:
        if broker is not None:
            broker.stop()
        cluster.down()
        print("cluster demo: Spark cluster, Kafka broker and namespace hosts stopped", flush=True)


@entry_point
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m stack.cluster_demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=300, help="good frames to publish")
    p.add_argument("--bad", type=int, default=6, help="corrupt frames mixed in (dead letters)")
    p.add_argument("--timeout", type=float, default=900.0,
                   help="seconds the stream may take, start-up included")
    p.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE",
                   help="a Spark setting for spark-submit (repeatable)")
    a = p.parse_args(argv)
    if a.frames < 1 or a.bad < 0:
        p.error("--frames must be >= 1 and --bad >= 0")
    bad_conf = [c for c in a.conf if "=" not in c or not c.split("=", 1)[0].strip()]
    if bad_conf:
        p.error(f"--conf takes KEY=VALUE, got {bad_conf[0]!r}")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if os.geteuid() != 0:
        p.error("the namespace hosts need root (and iproute2)")
    signal.signal(signal.SIGTERM, _interrupt)  # teardown runs on SIGTERM as on Ctrl-C
    return demo(a.frames, a.bad, a.timeout,
                dict(c.split("=", 1) for c in a.conf))


if __name__ == "__main__":
    sys.exit(main())
