"""``python -m bench.launcher_timings``: measure what a user waits for, with the real engines.

- ``reserve_s``: ``Launcher.acquire()`` after Ray is connected: placement group, holders,
  hostfile (what every gang pays before mpirun starts);
- ``launch_to_first_answer_s``: ``mpirun`` of ``mpi_workers.serve`` until the first request is
  answered (ranks start, load the model, publish generation 1, a client gets its reply);
- ``relaunch_after_kill_s``: ``kill -9`` of one rank until the relaunched gang (new generation)
  answers again, restarts = 1 (failure noticed, backoff, mpirun, publish, reply).

    python -m bench.launcher_timings --repeat 3                                  # a private local Ray
    python -m bench.launcher_timings --address 10.201.7.1:6379 --strategy SPREAD # e.g. the loopback one

Prints one JSON object: every run and the median of each figure. Ranks reachable from other
hosts need the CURVE settings (see ``python -m framestream.keys``); the backoff before a relaunch
is FRAMESTREAM_LAUNCHER_BACKOFF_S (set it to 0 to see the launch cost alone).
"""

from __future__ import annotations

import argparse
import logging
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _answer(ep_file: Path, generation: int, deadline_s: float) -> float:
    """Poll until ranks of ``generation`` answer one request; returns when they did."""
    import numpy as np

    from etl.client import ClientSettings, RankClient
    from framestream import endpoints

    images = np.zeros((64, 28, 28, 1), dtype=np.uint8)
    deadline = time.monotonic() + deadline_s
    while True:
        current = endpoints.read(ep_file)
        if current is not None and current.generation >= generation:
            client = RankClient(current, ClientSettings.load(chunk_frames=64),
                                refresh=lambda: endpoints.read(ep_file))
            try:
                client.infer(images, "random-fashion_cnn")
                return time.monotonic()
            finally:
                client.close()
        if time.monotonic() > deadline:
            raise TimeoutError(f"generation {generation} did not answer in {deadline_s}s")
        time.sleep(0.02)  # rank 0 publishes a file: poll it until the deadline


def one_run(ranks: int, strategy: str) -> dict[str, Any]:
    from launcher.api import Launcher
    from launcher.ray_cluster import connect
    from launcher.settings import LauncherSettings
    from framestream import endpoints

    with tempfile.TemporaryDirectory(prefix="fs-timings-") as tmp:
        ep_file = Path(tmp) / "endpoints.json"
        launcher = Launcher("timings", LauncherSettings.load(ranks=ranks, strategy=strategy))
        try:
            connect(launcher.ray_settings)  # not part of the reservation
            t0 = time.monotonic()
            launcher.acquire()
            t1 = time.monotonic()
            gang = launcher.serve(["--version", "random-fashion_cnn", "--threads", "1"], ep_file,
                                  Path(tmp) / "logs")
            t2 = _answer(ep_file, 1, 120)
            victim = endpoints.read(ep_file).ranks[-1]
            t3 = time.monotonic()
            logging.getLogger(__name__).info("killing rank %d (pid %d)", victim.rank, victim.pid)
            os.kill(victim.pid, signal.SIGKILL)
            t4 = _answer(ep_file, 2, 120)
            hosts = sorted({h for h, _ in launcher.launch.layout.hosts})
            return {"reserve_s": round(t1 - t0, 3), "launch_to_first_answer_s": round(t2 - t1, 3),
                    "relaunch_after_kill_s": round(t4 - t3, 3), "restarts": gang.restarts,
                    "nodes": hosts}
        finally:
            launcher.release()


def main(argv: list[str] | None = None) -> int:


    import ray

    from launcher.ray_cluster import RaySettings, connect

    p = argparse.ArgumentParser(prog="python -m bench.launcher_timings", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--address", help="Ray cluster (FRAMESTREAM_RAY_ADDRESS, default local)")
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--strategy", default="PACK")
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args(argv)
    logging.basicConfig(level=os.environ.get("FRAMESTREAM_LOG_LEVEL", "WARNING"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if a.address:
        os.environ["FRAMESTREAM_RAY_ADDRESS"] = a.address
    connect(RaySettings.load())
    try:
        runs = [one_run(a.ranks, a.strategy) for _ in range(a.repeat)]
    finally:
        ray.shutdown()
    keys = ("reserve_s", "launch_to_first_answer_s", "relaunch_after_kill_s")
    print(json.dumps({"runs": runs, "median": {k: statistics.median(r[k] for r in runs)
                                               for k in keys},
                      "backoff_s": os.environ.get("FRAMESTREAM_LAUNCHER_BACKOFF_S", "2.0 (default)")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
