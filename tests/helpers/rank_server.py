"""A second process for the ZeroMQ tests: the real serving loop, :class:`RankServer`, on a random
loopback port with the random-init Fashion-MNIST model (no registry, no MPI).

``python -m tests.helpers.rank_server`` prints the endpoint on one line and serves until it is
killed (it has no control token, so no message can stop it) or nobody talks for a minute.
"""

from __future__ import annotations

import sys
import threading

import torch
import zmq

from mpi_workers.metrics import RankMetrics
from mpi_workers.model_cache import ModelCache
from mpi_workers.server_loop import RankServer

MODEL = "random-fashion_cnn"


def main() -> None:
    torch.set_num_threads(1)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    server = RankServer(sock, ModelCache(None, "cpu", default=MODEL), RankMetrics(0), 0, 256,
                        60.0, 1 << 24)
    watchdog = threading.Timer(600.0, server.stop)  # the test is long gone: do not linger
    watchdog.daemon = True
    watchdog.start()
    print(f"tcp://127.0.0.1:{port}", flush=True)
    server.run()
    sock.close(0)
    ctx.term()


if __name__ == "__main__":
    sys.exit(main())
