"""``mpirun -n N python -m mpi_workers.serve``: long-lived inference ranks behind ZeroMQ.

Each rank loads the model onto its device (``cuda:<local rank>`` when there is CUDA, else the CPU
with ``cores // ranks-on-this-host`` threads), binds a ROUTER socket (127.0.0.1 by default) and
answers INFER / PING / SHUTDOWN (see :mod:`framestream.wire`). Requests waiting on the socket
are coalesced into one forward pass up to ``--max-batch`` frames (dynamic batching). Rank 0
gathers every rank's endpoint over MPI and publishes the set (see :mod:`framestream.endpoints`).

Any message a rank cannot use gets an ERROR reply and the rank keeps serving. SIGTERM ends the
rank after the batch in hand; so does SHUTDOWN, but only with the gang's control token, which the
launcher gives the ranks alone in ``FRAMESTREAM_CONTROL_TOKEN`` (without it no message stops them).

Binding anything but a loopback address needs CURVE keys (``--curve-secret`` + ``--curve-clients``,
made by ``python -m framestream.keys init DIR``): only clients whose public key is in the allowed
folder get in. Without keys such a bind is refused unless ``--insecure`` is given explicitly.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING

from framestream.paths import state_dir
from framestream.security import server_keys
from framestream.flags import add_settings, from_args
from framestream.settings import Section, section, setting
from mpi_workers.dist import abort_on_error, local_rank, world
from mpi_workers.rank_socket import (DEFAULT_RCVHWM, bind_router, control_token_from_env,
                                     publish_endpoints)

if TYPE_CHECKING:
    from mpi_workers.metrics import RankMetrics
    from mpi_workers.model_cache import ModelCache

log = logging.getLogger(__name__)


class ServeSettings(Section):
    """A serving rank: its socket, its model runtime, its limits."""

    model_config = section("serve")

    bind: str = setting("127.0.0.1", "address each rank's ZeroMQ socket binds (a network address "
                                     "needs CURVE keys or FRAMESTREAM_SERVE_INSECURE)")
    port: int = setting(0, "rank 0's TCP port; rank k uses port + k (0 = any free)",
                        ok=lambda v: 0 <= v < 65536, expected="0 (any) or a TCP port")
    max_batch: int = setting(256, "frames per forward pass at most",
                             ok=lambda v: 1 <= v <= 65536, expected="1..65536")
    max_request_bytes: int = setting(256 * 1024 * 1024, "largest message a rank accepts, in bytes",
                                     ok=lambda v: v > 0, expected="> 0")
    # messages queued per peer connection (ZMQ_RCVHWM): with max_request_bytes, a peer's memory
    rcvhwm: int = setting(DEFAULT_RCVHWM, "messages queued per peer connection (ZMQ_RCVHWM)",
                          ok=lambda v: 1 <= v <= 100_000, expected="1..100000")
    metrics_port: int = setting(0, "Prometheus port of rank 0; rank k uses port + k "
                                   "(0 = any free, -1 = off)", ok=lambda v: -1 <= v < 65536,
                                expected="-1 (off), 0 (any) or a TCP port")
    endpoints_file: str = setting(doc="where rank 0 publishes the ranks' endpoints",
                                  factory=lambda: str(state_dir() / "endpoints.json"),
                                  shown="<state>/endpoints.json")
    registry: str = setting("", "model registry root (empty = FRAMESTREAM_REGISTRY_ROOT)")
    device: str = setting("auto", "torch device of each rank: auto, cpu or cuda",
                          ok=lambda v: v in ("auto", "cpu", "cuda"), expected="auto, cpu or cuda")
    threads: int = setting(0, "torch threads per rank (0 = automatic)",
                           ok=lambda v: v >= 0, expected="0 (auto) or >= 1")
    # what runs the model step (models/runtime.py): auto = ONNX Runtime on a CPU when it passes
    # the parity gate against eager torch, else eager torch
    runtime: str = setting("auto", "what runs the model step: auto (ONNX Runtime on a CPU when it "
                                   "passes the parity gate, else eager torch), eager, onnxruntime",
                           ok=lambda v: v in ("auto", "eager", "onnxruntime"),
                           expected="auto, eager or onnxruntime")
    refresh_s: float = setting(0.5, "seconds between checks for a newly promoted version",
                               ok=lambda v: v > 0, expected="> 0")
    curve_secret: str = setting("", "the ranks' ZeroMQ CURVE secret certificate (enables CURVE)")
    curve_clients: str = setting("", "folder of allowed client public certificates (*.key)")
    insecure: bool = setting(False, "allow a non-loopback bind without CURVE")


def _device(choice: str, local: int) -> str:
    import torch

    if choice in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{local % torch.cuda.device_count()}"
    if choice == "cuda":
        raise RuntimeError("--device cuda asked, but torch sees no CUDA device")
    return "cpu"


def _threads(setting: int, ranks_here: int) -> int:
    return setting or max(1, (os.cpu_count() or 1) // max(1, ranks_here))


def parse_args(argv: list[str] | None) -> tuple[ServeSettings, argparse.Namespace]:
    p = argparse.ArgumentParser(prog="mpirun -n N python -m mpi_workers.serve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_settings(p, ServeSettings, "bind", "port", "max_batch", "metrics_port", "endpoints_file",
                 "registry", "device", "threads", "runtime", "curve_secret", "curve_clients",
                 "insecure")
    p.add_argument("--version", help="serve this version instead of following the registry")
    p.add_argument("--generation", type=int, default=None,
                   help="endpoint generation to publish (default: the published one + 1)")
    p.add_argument("--job", default="", help="launch id recorded with the endpoints")
    args = p.parse_args(argv)
    settings = from_args(args, ServeSettings)
    return settings, args


@abort_on_error
def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=os.environ.get("FRAMESTREAM_LOG_LEVEL", "INFO"),
                        format=f"%(asctime)s rank{world().rank} %(levelname)s %(name)s: %(message)s")
    s, args = parse_args(argv)
    keys = server_keys(s.bind, s.curve_secret, s.curve_clients, s.insecure)  # before any work
    control_token = control_token_from_env()
    import torch
    import zmq
    from mpi4py import MPI

    from mpi_workers.metrics import RankMetrics
    from mpi_workers.model_cache import ModelCache
    from mpi_workers.server_loop import RankServer

    comm = world()
    local = local_rank(comm)
    ranks_here = comm.Split_type(MPI.COMM_TYPE_SHARED).size
    device = _device(s.device, local)
    torch.set_num_threads(_threads(s.threads, ranks_here))
    metrics = RankMetrics(comm.rank)
    models = ModelCache(s.registry, device, default=args.version, runtime=s.runtime,
                        on_load=metrics.record_runtime)

    ctx = zmq.Context()
    bound = bind_router(ctx, s.bind, s.port, comm.rank, s.max_request_bytes, keys, s.insecure,
                        peer_counter(metrics.registry), rcvhwm=s.rcvhwm)
    sock, endpoint = bound.sock, bound.endpoint
    record_start_choice(models, metrics)
    metrics_url = "" if s.metrics_port < 0 else metrics.serve(
        s.bind, s.metrics_port + comm.rank if s.metrics_port else 0)
    publish_endpoints(comm, endpoint, s.endpoints_file, device, metrics_url,
                      models.default_version, args.generation, args.job)

    server = RankServer(sock, models, metrics, comm.rank, s.max_batch, s.refresh_s,
                        s.max_request_bytes, guard=bound.guard, control_token=control_token)
    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    signal.signal(signal.SIGINT, lambda *_: server.stop())
    runtime = models.get(models.default_version).runtime
    log.info("rank %d serving %s on %s (%s, %d threads, %s)", comm.rank, models.default_version,
             endpoint, device, torch.get_num_threads(), runtime.runtime if runtime else "eager")
    server.run()
    bound.close()
    ctx.term()
    log.info("rank %d stopped after %d frames", comm.rank, server.frames_served)
    return 0


def record_start_choice(models: "ModelCache", metrics: "RankMetrics") -> None:
    """The version served from start in ``framestream_rank_model_info`` (with what serving.json
    named and why it was not served), and ``framestream_rank_model_fallbacks_total{rank, reason}``
    (created at 0 for every reason, so a dashboard sees the series before the first fallback)."""
    from prometheus_client import Counter

    from models.fallback import REASONS

    fallbacks = Counter("framestream_rank_model_fallbacks", "start-ups that served an older "
                        "version because the promoted one could not be loaded, by reason",
                        ["rank", "reason"], registry=metrics.registry)
    rank = str(world().rank)
    for reason in REASONS:
        fallbacks.labels(rank=rank, reason=reason)
    choice = models.start
    info = {"version": models.default_version}
    if choice is not None and choice.fell_back:
        fallbacks.labels(rank=rank, reason=choice.reason).inc()
        info.update(named=choice.named or "", fallback_reason=choice.reason)
        log.error("serving %s instead of %s (%s: %s)%s", choice.version,
                  choice.named or "serving.json's version", choice.reason, choice.detail,
                  "" if choice.promoted else "; it was never promoted")
    metrics.model.info(info)


def peer_counter(registry: object) -> object:
    """``framestream_rank_peers_total{rank, event}``: connections at the rank's door."""
    from prometheus_client import Counter

    return Counter("framestream_rank_peers", "connection events at the rank's socket: accepted, "
                   "handshake_ok, unauthorized, bad_handshake, no_handshake, disconnected",
                   ["rank", "event"], registry=registry)


if __name__ == "__main__":
    sys.exit(main())
