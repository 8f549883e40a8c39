"""Time-bounded fuzzing of the two decoders that face the outside: frames (etl.decode) and wire
messages (framestream.wire, and a live serving loop behind a real socket).

A seeded mutational fuzzer (bit flips, byte sets at the header, insertions, deletions, cuts,
splices of two inputs) over valid seeds: Fashion-MNIST in four formats, the unusual-but-valid
catalogue, the hostile catalogue, and encoded protocol messages. Messages are also generated
structurally (:func:`structured_message`): well-formed headers whose tensor specs have zero, huge,
negative, bool or float dimensions, too many dimensions, any dtype, with empty or matching
buffers, and control ops (SHUTDOWN, END, CANCEL) without the gang's token. A frame may only decode
or be rejected (FrameRejected); a message may only parse or raise ProtocolError; the live rank must
answer a PING after every burst. Anything else is a crash and fails the test.

Budget: ``FRAMESTREAM_FUZZ_SECONDS`` per target (default 10 in CI; ``make chaos`` gives 120).
Figures (inputs tried, outcomes, crashes) go to ``.state/chaos/fuzz.json``.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable

import msgpack
import numpy as np
import pytest
import torch
import zmq

from etl.decode import FrameLimits, FrameRejected, decode_one
from framestream import fashion_mnist, hostile
from framestream.atomic import write_atomic
from framestream.frames import encode_image
from framestream.paths import state_dir
from models.spec import PreprocessSpec
from mpi_workers.metrics import RankMetrics
from mpi_workers.model_cache import ModelCache
from framestream.wire import DTYPES, VERSION, Message, Op, ProtocolError, decode, encode
from mpi_workers.server_loop import RankServer

pytestmark = [pytest.mark.chaos]
SECONDS = float(os.environ.get("FRAMESTREAM_FUZZ_SECONDS", "10"))
FIGURES = state_dir() / "chaos" / "fuzz.json"


def mutate(rng: random.Random, data: bytes, seeds: list[bytes]) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        op = rng.random()
        if not out:
            out += rng.randbytes(rng.randint(1, 64))
        elif op < 0.3:
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
        elif op < 0.5:  # where sizes, modes and lengths are declared
            out[rng.randrange(min(64, len(out)))] = rng.choice((0x00, 0x01, 0x7F, 0x80, 0xFF))
        elif op < 0.65:
            at = rng.randrange(len(out))
            out[at:at] = rng.randbytes(rng.randint(1, 16))
        elif op < 0.8:
            at = rng.randrange(len(out))
            del out[at:at + rng.randint(1, 32)]
        elif op < 0.9:
            del out[rng.randrange(len(out)):]
        else:
            other = rng.choice(seeds)
            out = out[:rng.randrange(len(out) + 1)] + other[rng.randrange(len(other) + 1):]
    return bytes(out)


def run_for(seconds: float, one: Callable[[random.Random], str], seed: int) -> dict:
    rng, outcomes, crashes = random.Random(seed), Counter(), []
    started = time.monotonic()
    slowest = 0.0
    while time.monotonic() - started < seconds:
        t = time.perf_counter()
        try:
            outcomes[one(rng)] += 1
        except Exception as exc:  # noqa: BLE001 - a crash is any other exception: record it
            crashes.append(f"{type(exc).__name__}: {exc}"[:300])
        slowest = max(slowest, time.perf_counter() - t)
    return {"seconds": round(time.monotonic() - started, 1), "inputs": sum(outcomes.values())
            + len(crashes), "crashes": len(crashes), "crash_samples": crashes[:5],
            "outcomes": dict(outcomes.most_common()), "slowest_input_s": round(slowest, 3)}


def save(target: str, figures: dict) -> None:
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    try:
        table = json.loads(FIGURES.read_text())
    except (FileNotFoundError, ValueError):
        table = {}
    table[target] = {**figures, "at": time.time()}
    write_atomic(FIGURES, json.dumps(table, indent=2, sort_keys=True))


def frame_seeds() -> list[bytes]:
    images, _ = fashion_mnist.load("test")
    seeds = [encode_image(images[i], fmt) for i, fmt in enumerate(("png", "jpeg", "webp", "bmp"))]
    seeds += [f().data for k, f in sorted(hostile.VALID.items()) if k != "jpeg_large"]
    seeds += [f().data for k, f in sorted(hostile.BAD.items())
              if k not in ("over_size", "png_bomb_deflate")]
    return seeds


def test_fuzz_the_frame_decoder() -> None:
    seeds, spec, limits = frame_seeds(), PreprocessSpec(), FrameLimits(decode_timeout_s=2.0)

    def one(rng: random.Random) -> str:
        data = rng.randbytes(rng.randint(0, 2048)) if rng.random() < 0.1 else \
            mutate(rng, rng.choice(seeds), seeds)
        try:
            out = decode_one(data, spec, limits)
        except FrameRejected as rejected:
            assert rejected.detail
            return f"rejected:{rejected.reason.value}"
        assert out.shape == spec.shape and out.dtype == np.uint8
        return "decoded"

    figures = run_for(SECONDS, one, seed=int(time.time()) % 10_000)
    save("frame_decoder", figures)
    assert figures["crashes"] == 0, figures["crash_samples"]
    assert figures["inputs"] > 100 and figures["outcomes"].get("decoded", 0) > 0


def message_seeds() -> list[list[bytes]]:
    img = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28, 1)
    msgs = [Message(Op.INFER, 7, (img,), "random-fashion_cnn", ttl=60.0),
            Message(Op.TRAIN, "t", (img, np.array([1, 2], np.int64))), Message(Op.PING, "p"),
            Message(Op.RESULT, 3, (np.ones((2, 10), np.float32),), "v1", None, {"rank": 0})]
    return [[bytes(f) for f in encode(m)] for m in msgs]


def mutate_message(rng: random.Random, seeds: list[list[bytes]]) -> list[bytes]:
    parts = [bytes(p) for p in rng.choice(seeds)]
    flat = [p for s in seeds for p in s]
    for _ in range(rng.randint(1, 3)):
        r = rng.random()
        if r < 0.6:
            i = rng.randrange(len(parts))
            parts[i] = mutate(rng, parts[i], flat) if parts[i] else rng.randbytes(3)
        elif r < 0.75 and len(parts) > 1:
            del parts[rng.randrange(len(parts))]
        elif r < 0.9:
            parts.insert(rng.randrange(len(parts) + 1), rng.randbytes(rng.randint(0, 64)))
        else:
            parts = [rng.randbytes(rng.randint(0, 256)) for _ in range(rng.randint(1, 4))]
    return parts or [b""]


HUGE_DIMS = (2**31 - 1, 2**31, 2**32, 2**39, 2**62, 2**63 - 1, 2**63, 2**64 - 1)


def structured_dim(rng: random.Random) -> object:
    r = rng.random()
    if r < 0.35:
        return rng.choice((0, 1, 2, 3, 28))
    if r < 0.65:
        return rng.choice(HUGE_DIMS)
    if r < 0.75:
        return rng.randint(-2**63, -1)
    return rng.choice((True, False, 1.0, 0.0, float("inf"), "7", None, [1]))


def structured_message(rng: random.Random) -> list[bytes]:
    """A well-formed header with crafted tensor specs, or a control op without the token."""
    if rng.random() < 0.15:
        op = rng.choice(("SHUTDOWN", "END", "CANCEL"))
        meta = rng.choice(({}, {"token": ""}, {"token": "guess"}, {"token": 5},
                           {"request": rng.choice((7, "x", [1]))}))
        return [msgpack.packb({"v": VERSION, "op": op, "id": "c", "tensors": [], "meta": meta})]
    specs, buffers = [], []
    for _ in range(rng.randint(1, 3)):
        ndim = rng.choice((0, 1, 2, 4, 4, 8, 9, 16))
        shape = [structured_dim(rng) for _ in range(ndim)]
        dtype = rng.choice(sorted(DTYPES) + ["object", "float128", "U4", ""])
        specs.append({"dtype": dtype, "shape": shape})
        small = all(type(d) is int and 0 <= d <= 28 for d in shape) and dtype in DTYPES
        n = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize if small else 0
        buffers.append(b"\x00" * n if small and n <= 1 << 16 and rng.random() < 0.7 else b"")
    header = {"v": VERSION, "op": rng.choice(("INFER", "INFER", "TRAIN", "PING")), "id": "s",
              "tensors": specs, "model": rng.choice((None, "random-fashion_cnn")),
              "ttl": rng.choice((None, 0.0, 30.0)), "meta": {}}
    return [msgpack.packb(header), *buffers]


def any_message(rng: random.Random, seeds: list[list[bytes]]) -> list[bytes]:
    return structured_message(rng) if rng.random() < 0.5 else mutate_message(rng, seeds)


def test_fuzz_the_wire_decoder() -> None:
    seeds = message_seeds()

    def one(rng: random.Random) -> str:
        try:
            msg = decode(any_message(rng, seeds), max_bytes=1 << 20)
        except ProtocolError as exc:
            return f"refused:{exc.code}"
        return f"parsed:{msg.op.value}"

    figures = run_for(SECONDS, one, seed=int(time.time()) % 10_000 + 1)
    save("wire_decoder", figures)
    assert figures["crashes"] == 0, figures["crash_samples"]
    assert figures["inputs"] > 1000


def test_fuzz_a_live_rank_over_its_socket() -> None:
    """Mutated messages at a real serving loop; after every burst it must still answer PING."""
    torch.set_num_threads(1)
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.linger = 0
    endpoint = f"tcp://127.0.0.1:{router.bind_to_random_port('tcp://127.0.0.1')}"
    server = RankServer(router, ModelCache(None, "cpu", default="random-fashion_cnn"),
                        RankMetrics(0), 0, 256, 60.0, 1 << 20)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    dealer = ctx.socket(zmq.DEALER)
    dealer.linger = 0
    dealer.connect(endpoint)
    seeds = message_seeds()

    def one(rng: random.Random) -> str:
        for _ in range(20):
            dealer.send_multipart(any_message(rng, seeds))
        dealer.send_multipart(encode(Message(Op.PING, "alive")))
        replies = Counter()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if not dealer.poll(1000):
                continue
            got = decode(dealer.recv_multipart())
            if got.op is Op.PONG and got.id == "alive":
                return "alive"
            replies[got.op.value] += 1
        raise AssertionError(f"the rank stopped answering (thread alive: {thread.is_alive()})")

    try:
        figures = run_for(SECONDS, one, seed=int(time.time()) % 10_000 + 2)
    finally:
        server.stop()
        thread.join(10)
        dealer.close(0)
        router.close(0)
        ctx.term()
    figures["messages"] = figures["inputs"] * 21
    save("live_rank", figures)
    assert figures["crashes"] == 0, figures["crash_samples"]
    assert figures["inputs"] > 20
