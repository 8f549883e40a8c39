"""``make demo``: the main job end to end on the embedded default stack.

1. the local Kafka broker (reused if running) and a check of every engine;
2. a model in the registry (trained here with ``mpirun -n 2 jobs/retrain.py`` when it is empty);
3. ``spark-submit jobs/stream_classify.py --ranks 2`` on the ``frames`` topic from its current end;
4. 10,000 Fashion-MNIST test frames and a few corrupt ones published by ``jobs.produce``;
5. a summary read back from ``predictions`` and ``frames.dlq``: frames in, predictions, dead
   letters, frames/s, frame -> prediction latency p50/p99, accuracy against the true labels.

The stream serves the live status page (``--status-port``, default 8765 or any free port); its
address is printed, and an interactive demo keeps it up until Enter or Ctrl-C (not when CI is
set or stdin is not a terminal).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from framestream.config import KafkaSettings
from framestream.exits import entry_point
from framestream.logs import setup_logging
from framestream.paths import state_dir
from jobs.submit import spark_submit_argv


def _stream_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable)
    return env


def _wait(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"the stream exited ({proc.returncode}) while waiting for {what}")
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up after {timeout:.0f}s waiting for {what}")
        time.sleep(0.5)


def _free_or_any(port: int) -> int:
    """``port`` when nothing listens there on loopback, else 0 (any free port)."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return 0
    return port


def _status_url(log: Path) -> str:
    found = re.search(r"^status page: (\S+)$", log.read_text(errors="replace"), re.M)
    return found[1] if found else ""


def _interactive() -> bool:
    return sys.stdin.isatty() and os.environ.get("CI", "").lower() not in ("1", "true", "yes")


def stack(cmd: str, timeout: float = 600.0) -> int:
    """``python -m stack <cmd>`` (the dev stack is tooling: run as its command, never imported
    by product code); its exit code."""
    try:
        return subprocess.run([sys.executable, "-m", "stack", cmd], env=_stream_env(),
                              timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        print(f"`python -m stack {cmd}` did not finish within {timeout:.0f}s", file=sys.stderr)
        return 1


@entry_point
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jobs.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=10_000, help="Fashion-MNIST frames to publish")
    p.add_argument("--corrupt", type=int, default=5, help="corrupt frames mixed in")
    p.add_argument("--rate", type=float, default=1500,
                   help="frames/s the cameras send (0 = as fast as possible); the default stays "
                        "below what 2 cores classify, so the latency is the pipeline's, not a "
                        "backlog's")
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--skip-doctor", action="store_true", help="skip the per-engine check")
    p.add_argument("--status-port", type=int, default=8765,
                   help="the live status page's port (taken: any free one; -1: no page)")
    a = p.parse_args(argv)
    setup_logging("WARNING")
    from framestream import results

    kafka = KafkaSettings.load()
    print("== 1/5 Kafka broker (single-node KRaft on 127.0.0.1)", flush=True)
    if stack("up") != 0:
        return 1
    if not a.skip_doctor:
        print("== 2/5 engines", flush=True)
        if stack("doctor") != 0:
            return 1
    print("== 3/5 model", flush=True)
    from models.registry import Registry
    from jobs.first_version import ensure_first_version

    registry = Registry()
    manifest = ensure_first_version(registry, ranks=a.ranks)
    print(f"serving {manifest.version}: holdout accuracy "
          f"{manifest.metrics['holdout_accuracy']:.4f} ({manifest.net}, {registry.root})", flush=True)

    print(f"== 4/5 stream: spark-submit jobs/stream_classify.py --ranks {a.ranks}", flush=True)
    start = {t: results.end_offsets(kafka.bootstrap, t)
             for t in (kafka.frames_topic, kafka.predictions_topic, kafka.dlq_topic)}
    run_dir = state_dir() / "demo" / time.strftime("%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=True)
    ready = run_dir / "ready.json"
    args = ["--ranks", str(a.ranks), "--checkpoint", str(run_dir / "checkpoint"),
            "--starting-offsets", results.spark_offsets(kafka.frames_topic,
                                                        start[kafka.frames_topic]),
            "--ready-file", str(ready)]
    if a.status_port >= 0:
        args += ["--status-port", str(_free_or_any(a.status_port))]
    spark_submit, cmd, env = spark_submit_argv("jobs.stream_classify", args)  # framestream-stream
    log = run_dir / "stream.log"
    with open(log, "wb") as out:
        stream = subprocess.Popen(cmd, executable=spark_submit, env={**_stream_env(), **env},
                                  stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  start_new_session=True)
    try:
        _wait(ready.exists, 300, "the stream to start (log: %s)" % log, stream)
        url = _status_url(log)
        if url:
            print(f"status page: {url}  (live: rates, lag, dead letters, versions, ranks, "
                  f"retraining runs; links to Spark's UI and Ray's dashboard while they answer)",
                  flush=True)
        print(f"stream running (log {log}); publishing {a.count} frames + {a.corrupt} corrupt",
              flush=True)
        produce = [sys.executable, "-m", "jobs.produce", "--count", str(a.count), "--corrupt",
                   str(a.corrupt), "--rate", str(a.rate), "--format", "png"]
        subprocess.run(produce, check=True, env=_stream_env(), timeout=600)
        sent = a.count + a.corrupt

        def done() -> bool:
            got = sum(sum(results.end_offsets(kafka.bootstrap, t).values())
                      - sum(start[t].values()) for t in (kafka.predictions_topic, kafka.dlq_topic))
            return got >= sent
        _wait(done, 600, f"{sent} predictions + dead letters", stream)
    except BaseException:
        _stop(stream)
        raise
    ok = False
    try:  # the stream (and its page) stays up through the summary
        print("== 5/5 summary", flush=True)
        preds = results.read_topic(kafka.bootstrap, kafka.predictions_topic,
                                   start[kafka.predictions_topic], timeout=60)
        dlq = results.read_topic(kafka.bootstrap, kafka.dlq_topic, start[kafka.dlq_topic],
                                 timeout=60)
        summary = results.summarize(sent, preds, dlq)
        for line in summary.lines():
            print("  " + line)
        ok = summary.predictions + summary.dead_letters == sent and summary.conflicting == 0
        print("demo " + ("passed: every frame is a prediction or a dead letter" if ok else
                         "FAILED: frames went missing"), flush=True)
        if url and _interactive() and stream.poll() is None:
            input(f"the stream and its status page ({url}) stay up: press Enter to stop ")
    except (KeyboardInterrupt, EOFError):
        print(flush=True)
    finally:
        _stop(stream)
    return 0 if ok else 1


def _stop(stream: subprocess.Popen) -> None:
    if stream.poll() is None:
        os.killpg(stream.pid, signal.SIGTERM)
        try:
            stream.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(stream.pid, signal.SIGKILL)


if __name__ == "__main__":
    sys.exit(main())
