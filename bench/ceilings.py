"""Ceilings: what each stage alone does on this machine, with the same code, frames and threads.

    python -m bench.ceilings [--quick] [--sets fashion,imagenet] [--ranks 1,2,4] [--batches ...]

- model-only: ``R`` processes x ``max(1, cores // R)`` torch threads (the ranks' own split), each
  running the ranks' forward pass (``mpi_workers.server_loop.forward``: normalise + net + softmax)
  on already-decoded uint8 tensors in slices of ``B`` frames; frames/s summed over processes;
- decode-only: ``P`` processes running the executors' ``etl.decode.decode_batch`` (decode,
  validate, resize to the net's spec) on the same JPEGs;
- transport-only: the executors' ``etl.client.RankClient`` sending the same uint8 batches
  (``chunk_frames`` per request, ``credits`` in flight) to a ZeroMQ echo rank that decodes each
  request with ``framestream.wire`` and replies with a zero score tensor of the real size.

Processes start together on a barrier after a warm-up pass (excluded); each runs for ``seconds``.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import os
import queue
import sys
import time
from typing import Any

from bench.common import Run, median, setup_logging

log = logging.getLogger(__name__)
CORES = os.cpu_count() or 1


def threads_for(ranks: int) -> int:
    """Torch threads per rank, as ``mpi_workers.serve`` picks them on one host."""
    return max(1, CORES // ranks)


# -- worker bodies (run in spawned processes) ------------------------------------------------------

def _model_worker(set_name: str, batch: int, threads: int, seconds: float, device: str,
                  barrier: Any, out: Any) -> None:
    from bench.frameset import model, preprocessed
    from mpi_workers.server_loop import forward

    m = model(set_name, threads=threads, device=device)
    images = preprocessed(set_name, max(batch, 64 if set_name == "imagenet" else 1024))
    forward(m, images[:min(batch, 8)], batch)  # warm-up, excluded
    barrier.wait()
    frames, start = 0, time.monotonic()
    while time.monotonic() - start < seconds:
        for lo in range(0, len(images), batch):
            forward(m, images[lo:lo + batch], batch)
            frames += len(images[lo:lo + batch])
            if time.monotonic() - start >= seconds:
                break
    out.put((frames, start, time.monotonic()))


def _decode_worker(set_name: str, seconds: float, barrier: Any, out: Any) -> None:
    from bench.frameset import frame_set, spec
    from etl.decode import decode_batch

    fs, sp = frame_set(set_name), spec(set_name)
    values = list(fs.values)
    decode_batch(values[:64], sp)  # warm-up, excluded
    barrier.wait()
    frames, start, i = 0, time.monotonic(), 0
    while time.monotonic() - start < seconds:
        chunk = values[i:i + 256] or values[:256]
        i = (i + 256) % len(values)
        frames += len(decode_batch(chunk, sp).ok_index)
    out.put((frames, start, time.monotonic()))


def _echo_rank(classes: int, port_out: Any, stop: Any) -> None:
    import numpy as np
    import zmq

    from framestream.wire import Op, decode, encode

    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    port_out.put(sock.bind_to_random_port("tcp://127.0.0.1"))
    while not stop.is_set():
        if not sock.poll(100):
            continue
        ident, *frames = sock.recv_multipart(copy=False)
        msg = decode(frames)
        scores = np.zeros((msg.tensors[0].shape[0], classes), np.float32)
        sock.send_multipart([ident, *encode(msg.reply(Op.RESULT, [scores], model=msg.model,
                                                       rank=0))], copy=False)
    sock.close(0)
    ctx.term()


# -- measurements -----------------------------------------------------------------------------------

def _together(target: Any, args_of: Any, n: int) -> float:
    """Run ``n`` spawned workers that meet at a barrier; all their frames over the span from the
    first start to the last end (CLOCK_MONOTONIC is one clock for every process)."""
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args_of(i), barrier, out)) for i in range(n)]
    for p in procs:
        p.start()
    rates: list[tuple[int, float, float]] = []
    try:
        while len(rates) < n:
            try:
                rates.append(out.get(timeout=1.0))
            except queue.Empty:
                dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(f"a {target.__name__} process failed (exit {dead[0]}); "
                                       f"its traceback is above") from None
    finally:
        for p in procs:
            p.join(60 if not rates or len(rates) == n else 1)
            if p.is_alive():
                p.terminate()
    span = max(end for _, _, end in rates) - min(start for _, start, _ in rates)
    return round(sum(frames for frames, _, _ in rates) / span, 1)


def model_only(set_name: str, ranks: int, batch: int, seconds: float, device: str = "cpu") -> float:
    t = threads_for(ranks)
    return _together(_model_worker, lambda i: (set_name, batch, t, seconds, device), ranks)


def decode_only(set_name: str, procs: int, seconds: float) -> float:
    return _together(_decode_worker, lambda i: (set_name, seconds), procs)


def transport_only(set_name: str, chunk: int, credits: int, seconds: float) -> float:
    from bench.frameset import preprocessed, spec
    from etl.client import ClientSettings, RankClient
    from framestream.endpoints import EndpointSet, RankEndpoint

    ctx = mp.get_context("spawn")
    port_q, stop = ctx.Queue(), ctx.Event()
    server = ctx.Process(target=_echo_rank, args=(len(spec(set_name).class_names), port_q, stop))
    server.start()
    try:
        port = port_q.get(timeout=60)
        eps = EndpointSet(1, (RankEndpoint(0, f"tcp://127.0.0.1:{port}", "localhost", 0),))
        client = RankClient(eps, ClientSettings(chunk_frames=chunk, credits_per_rank=credits))
        images = preprocessed(set_name, chunk)
        client.submit(0, images, "echo")
        client.gather()  # warm-up, excluded
        frames, start, tag = 0, time.perf_counter(), 0
        while time.perf_counter() - start < seconds:
            for _ in range(8):
                tag += 1
                client.submit(tag, images, "echo")
                frames += len(images)
            client.gather()
        rate = frames / (time.perf_counter() - start)
        client.close()
        return round(rate, 1)
    finally:
        stop.set()
        server.join(10)


def measure(sets: list[str], ranks: list[int], batches: list[int], seconds: float,
            repeats: int, chunk: int = 256, credits: int = 2,
            device: str = "cpu") -> dict[str, Any]:
    """Every ceiling for every set; repeats interleaved, medians kept with the raw samples."""
    out: dict[str, Any] = {}
    for s in sets:
        res: dict[str, Any] = {"model_only": {}, "decode_only": {}, "transport_only": {}}
        for rep in range(repeats):
            for r in ranks:
                for b in batches:
                    key = f"{r}x{threads_for(r)}/b{b}"
                    res["model_only"].setdefault(key, []).append(
                        model_only(s, r, b, seconds, device))
                    log.info("%s model-only %s: %s frames/s", s, key, res["model_only"][key][-1])
            for p in sorted({1, CORES}):
                res["decode_only"].setdefault(f"{p}proc", []).append(decode_only(s, p, seconds))
                log.info("%s decode-only %d proc: %s", s, p, res["decode_only"][f"{p}proc"][-1])
            key = f"chunk{chunk}"
            res["transport_only"].setdefault(key, []).append(
                transport_only(s, chunk, credits, seconds))
            log.info("%s transport-only %s: %s", s, key, res["transport_only"][key][-1])
        for kind in ("model_only", "decode_only", "transport_only"):
            res[kind] = {k: {"samples": v, "median": median(v)} for k, v in res[kind].items()}
        best = {kind: max(v["median"] for v in res[kind].values())
                for kind in ("model_only", "decode_only", "transport_only")}
        res["best"] = best
        res["limit"] = min(best["model_only"], best["decode_only"])
        # Decode and forward share the same cores in any one-machine pipeline: at best each frame
        # costs 1/model + 1/decode core-seconds-worth of the machine.
        res["shared_cores_limit"] = round(
            1 / (1 / best["model_only"] + 1 / best["decode_only"]), 1)
        out[s] = res
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ceilings", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer cells, 2 s each, 1 repeat")
    p.add_argument("--sets", default="fashion,imagenet")
    p.add_argument("--ranks", default="1,2,4")
    p.add_argument("--batches", default="1,5,10,20,64,256")
    p.add_argument("--seconds", type=float, default=None)
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    a = p.parse_args(argv)
    setup_logging()
    batches = "1,20,256" if a.quick and a.batches == p.get_default("batches") else a.batches
    params = {"sets": a.sets.split(","), "ranks": [int(x) for x in a.ranks.split(",")],
              "batches": [int(x) for x in batches.split(",")],
              "seconds": a.seconds or (2.0 if a.quick else 5.0),
              "repeats": a.repeats or (1 if a.quick else 3), "device": a.device,
              "warmup": "one pass per process before the barrier, excluded"}
    run = Run("ceilings", params, "quick" if a.quick else "full")
    run.results = measure(params["sets"], params["ranks"], params["batches"], params["seconds"],
                          params["repeats"], device=a.device)
    run.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
