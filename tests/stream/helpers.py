"""Run the real stream job (spark-submit jobs/stream_classify.py) from tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from framestream.paths import REPO

SPARK_SUBMIT = str(Path(sys.executable).parent / "spark-submit")


def stream_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable,
               PYTHONPATH=str(REPO), FRAMESTREAM_LOG_LEVEL="INFO")
    return env


def stream_cmd(args: Sequence[str]) -> list[str]:
    return [SPARK_SUBMIT, "--conf", "spark.ui.enabled=false", str(REPO / "jobs/stream_classify.py"),
            *args]


def start_stream(args: Sequence[str], log: Path,
                 env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """The stream job in its own process group (so a test can kill the whole driver); ``env``
    adds to :func:`stream_env`."""
    with open(log, "ab") as out:
        return subprocess.Popen(stream_cmd(args), env={**stream_env(), **(env or {})}, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO,
                                start_new_session=True)


def run_stream(args: Sequence[str], log: Path, timeout: float) -> dict:
    """Run to completion (use --available-now); returns the driver's final JSON stats."""
    proc = start_stream(args, log)
    try:
        code = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait(10)
        raise AssertionError(f"stream did not finish in {timeout}s; log {log}:\n"
                             + log.read_text(errors="replace")[-4000:]) from None
    text = log.read_text(errors="replace")
    assert code == 0, f"stream exited {code}; log {log}:\n{text[-4000:]}"
    stats = [line for line in text.splitlines() if line.startswith('{"batches"')]
    assert stats, f"no stats line in {log}:\n{text[-3000:]}"
    return json.loads(stats[-1])


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.2)  # polling other processes (Kafka, files), bounded by the deadline


def driver_pid(proc: subprocess.Popen[bytes], timeout: float = 60.0) -> int:
    """The Python driver process that spark-submit's JVM started for jobs/stream_classify.py."""
    import psutil

    found: list[int] = []

    def look() -> bool:
        for child in psutil.Process(proc.pid).children(recursive=True):
            try:
                if any("stream_classify.py" in part for part in child.cmdline()) \
                        and "python" in child.name():
                    found.append(child.pid)
                    return True
            except psutil.NoSuchProcess:
                continue
        return False

    wait_until(look, timeout, "the Python driver of spark-submit")
    return found[0]


def stop_stream(proc: subprocess.Popen[bytes], timeout: float = 90.0) -> int:
    """SIGTERM the Python driver (it stops the query and the ranks), wait for spark-submit."""
    import signal

    if proc.poll() is None:
        os.kill(driver_pid(proc), signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            raise AssertionError(f"the stream did not stop within {timeout}s of SIGTERM") from None
    return proc.returncode
