"""A fork in the driver (Ray starting a local instance, any ``preexec_fn``) must not cut the JVM
connections that the driver's other threads hold (etl/py4j_fork.py).

Seen in CI before the guard: the stream's Spark session, started on a thread while the main
thread started Ray, lost its py4j socket in the middle of ``SparkConf.contains``.
"""

from __future__ import annotations

import socket
import subprocess
import threading
from typing import Any

import pytest

pytestmark = pytest.mark.spark


def _noop() -> None:
    """Runs in the child between fork and exec: the other threads' states are torn down first."""


def test_a_fork_leaves_other_threads_py4j_connections_open(spark: Any) -> None:
    sc = spark.sparkContext
    client = sc._gateway._gateway_client
    opened, resume = threading.Event(), threading.Event()
    seen: dict[str, Any] = {}

    def other_thread() -> None:
        try:
            sc._jvm.java.lang.System.nanoTime()  # this thread's own connection (pinned mode)
            seen["before"] = client.get_thread_connection().socket
            opened.set()
            if not resume.wait(60):
                raise TimeoutError("the main thread never forked")
            seen["value"] = sc._jvm.java.lang.Math.max(2, 3)
            seen["after"] = client.get_thread_connection().socket
        except BaseException as exc:  # noqa: BLE001 -- reported by the main thread
            seen["error"] = exc
            opened.set()

    t = threading.Thread(target=other_thread, name="py4j-holder")
    t.start()
    try:
        assert opened.wait(60), "the other thread did not reach the JVM"
        assert "error" not in seen, seen.get("error")
        subprocess.run(["true"], preexec_fn=_noop, check=True, timeout=60)
        # The connection is still up: nothing to read and no end of stream. (Shut down by the
        # child, recv would return b"" at once.)
        with pytest.raises(BlockingIOError):
            seen["before"].recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    finally:
        resume.set()
        t.join(60)
    assert not t.is_alive()
    assert "error" not in seen, seen.get("error")
    assert seen["value"] == 3
    assert seen["after"] is seen["before"], "py4j had to reconnect: the fork cut the connection"
