"""Check that every engine of the stack really works on this machine, one small job each.

Used by ``make demo`` (and ``python -m stack doctor``): each check runs the real engine and says
what it saw; a failed check says what to do.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

from framestream.config import KafkaSettings

log = logging.getLogger(__name__)


def check_torch() -> str:
    import torch

    x = torch.ones(2, 3) @ torch.ones(3, 4)
    if float(x.sum()) != 24.0:
        raise RuntimeError(f"torch matmul gave {x}")
    cuda = f"CUDA {torch.version.cuda}, {torch.cuda.device_count()} GPU(s)" \
        if torch.cuda.is_available() else "no GPU, CPU only"
    return f"torch {torch.__version__} ({cuda}, {torch.get_num_threads()} threads)"


def check_zmq() -> str:
    import numpy as np
    import zmq

    from framestream.wire import Message, Op, decode, encode

    ctx = zmq.Context.instance()
    server, client = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    try:
        port = server.bind_to_random_port("tcp://127.0.0.1")
        client.connect(f"tcp://127.0.0.1:{port}")
        batch = np.random.default_rng(0).random((8, 28, 28), dtype=np.float32)
        client.send_multipart(encode(Message(Op.INFER, 1, (batch,))), copy=False)
        if not server.poll(5000):
            raise TimeoutError("no ZeroMQ message within 5 s on loopback")
        got = decode(server.recv_multipart(copy=False))
        if got.tensors[0].tobytes() != batch.tobytes():
            raise RuntimeError("tensor bytes changed in transit")
        return f"pyzmq {zmq.pyzmq_version()} / libzmq {zmq.zmq_version()}, protocol round trip exact"
    finally:
        server.close(0)
        client.close(0)


def check_kafka(kafka: KafkaSettings) -> str:
    from framestream.kafka_admin import broker_answers, describe

    # KafkaSettings, not the bootstrap alone: the clients carry FRAMESTREAM_KAFKA_* security
    if not broker_answers(kafka, timeout=10):
        raise RuntimeError(f"no Kafka broker answers at {kafka.bootstrap} with "
                           f"FRAMESTREAM_KAFKA_SECURITY_PROTOCOL={kafka.security_protocol}: run "
                           f"`make up` (or `python -m stack cluster up`), or check the settings")
    topics = describe(kafka)
    missing = [t for t in kafka.topics() if t not in topics]
    if missing:
        raise RuntimeError(f"topics {missing} missing at {kafka.bootstrap}: run `make up`")
    return f"broker at {kafka.bootstrap}; " + ", ".join(f"{t}[{topics[t]}]" for t in kafka.topics())


def check_spark(kafka: KafkaSettings) -> str:
    from etl.session import SparkSettings, spark_session

    spark = spark_session(SparkSettings.load(ui=False))
    try:
        rows = (spark.read.format("kafka").options(**kafka.spark_options())  # + security
                .option("subscribe", kafka.frames_topic).load().count())
        return (f"Spark {spark.version} read {kafka.frames_topic} with the Kafka source "
                f"({rows} records)")
    finally:
        spark.stop()


def check_mpi() -> str:
    from launcher.mpirun import run_mpi

    out = run_mpi(2, "mpi_workers.selfcheck", timeout=120).stdout
    got = json.loads(out.strip().splitlines()[-1])
    if got["mpi_allreduce"] != [3.0] * 4 or got["torch_allreduce"] != [3.0] * 4:
        raise RuntimeError(f"allreduce over 2 ranks gave {got}")
    return f"mpirun -n 2: MPI and torch.distributed ({got['torch_backend']}) allreduce right; {got['mpi']}"


def check_ray() -> str:
    import ray

    from launcher.placement import release, reserve
    from launcher.ray_cluster import RaySettings, connect

    connect(RaySettings.load(address="local", num_cpus=2))
    try:
        pg = reserve([{"CPU": 1}, {"CPU": 1}], "PACK", timeout=30)
        release(pg)
        return f"Ray {ray.__version__}: a 2-bundle placement group reserved and released"
    finally:
        ray.shutdown()


def run_checks(kafka: KafkaSettings | None = None) -> bool:
    kafka = kafka or KafkaSettings.load()
    checks: list[tuple[str, Callable[[], str]]] = [
        ("torch", check_torch), ("zeromq", check_zmq), ("kafka", lambda: check_kafka(kafka)),
        ("spark", lambda: check_spark(kafka)), ("mpi", check_mpi), ("ray", check_ray)]
    ok = True
    for name, fn in checks:
        started = time.monotonic()
        try:
            detail = fn()
            print(f"  ok    {name:7s} {detail} ({time.monotonic() - started:.1f}s)", flush=True)
        except Exception as exc:  # report every engine, then fail
            ok = False
            print(f"  FAIL  {name:7s} {type(exc).__name__}: {exc}", flush=True)
    return ok
