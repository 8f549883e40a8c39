"""Hostile frames and hostile messages through the real stream, with the ranks under attack.

Every frame of the hostile catalogue (bombs by header and by deflate, truncations, random bytes,
wrong magic, over the size limit, absurd aspect, unsupported format and mode, a frame that takes
longer than the decode timeout) must reach ``frames.dlq`` with its precise reason; every unusual
but valid frame (JPEG baseline/progressive/CMYK/gray, PNG 8/16-bit/palette/alpha, EXIF-rotated,
WebP, GIF, BMP, TIFF) must be classified; no micro-batch may stall. Meanwhile a rank is fed
garbage: raw TCP junk, malformed ZeroMQ messages, an oversized message. It answers or drops them,
counts them, and keeps serving.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
import urllib.request
import zlib
from pathlib import Path

import pytest
import zmq

from framestream import hostile, results
from framestream.frames import Frame
from framestream.producer import fashion_frames, mix_in
from framestream.wire import Message, Op, encode
from tests.chaos.harness import ChaosStream, Profile, assert_conserved, record

pytestmark = [pytest.mark.chaos, pytest.mark.spark, pytest.mark.kafka, pytest.mark.mpi,
              pytest.mark.slow]

MAX_BYTES = 300_000       # the stream's FRAMESTREAM_LIMITS_MAX_BYTES here: over_size fits Kafka
DECODE_TIMEOUT_S = 0.2    # FRAMESTREAM_LIMITS_DECODE_TIMEOUT_S here (valid frames take < 0.05 s)


def slow_png() -> bytes:
    """8000 x 5000 16-bit gray, every row Paeth-filtered: 40 M pixels (the pixel limit, so it
    passes every size check) in 87 KB that take 0.3-0.7 s to decode: longer than the timeout."""
    row = b"\x04" + b"\x00" * (2 * 8000)
    return hostile.png_from_header(8000, 5000, zlib.compress(row * 5000, 9), bit_depth=16)


def catalogue() -> tuple[list[tuple[str, bytes, str]], list[Frame]]:
    bad = [(k, f().data, f().expect.value) for k, f in sorted(hostile.BAD.items())
           if k != "over_size" and len(f().data) <= hostile.KAFKA_SAFE_BYTES]
    over = hostile.over_size(MAX_BYTES)
    bad += [(over.kind, over.data, over.expect.value), ("slow_png", slow_png(), "timeout")]
    valid = [Frame(key=f"cam-{i % 4}", value=f().data, frame_id=f"valid-{k}",
                   capture_ts=time.time(), sample=f"valid:{k}")
             for i, (k, f) in enumerate(sorted(hostile.VALID.items()))]
    return bad, valid


def attack(rank: dict, stop: threading.Event, sent: dict[str, int]) -> None:
    """Garbage at one rank's socket until ``stop``: raw TCP junk and malformed messages."""
    host, port = rank["endpoint"].removeprefix("tcp://").rsplit(":", 1)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(rank["endpoint"])
    junk = [[b"\xc1"], [b"\x81\xa1v\x63"], [b"\x00" * 70_000],
            [encode(Message(Op.INFER, 1))[0], b"short"],
            encode(Message(Op.TRAIN, "t")), encode(Message(Op.END, "e"))]
    try:
        while not stop.is_set():
            for parts in junk:
                sock.send_multipart(parts)
                sent["messages"] += 1
            with socket.create_connection((host, int(port)), timeout=5) as raw:
                raw.sendall(os.urandom(300))
            sent["tcp"] += 1
            while sock.poll(0):
                sock.recv_multipart()
            stop.wait(0.2)  # a steady trickle of garbage, not a flood
    finally:
        sock.close(0)
        ctx.term()


def test_hostile_frames_and_messages_through_the_stream(kafka_bootstrap: str,
                                                        topics: dict[str, str], tmp_path: Path,
                                                        prof: Profile) -> None:
    bad, valid = catalogue()
    good = 600
    frames = list(mix_in(iter([*valid, *fashion_frames(good - len(valid))]), bad, good, seed=5))
    run = ChaosStream(kafka_bootstrap, topics, tmp_path, prof, env={
        "FRAMESTREAM_LIMITS_MAX_BYTES": str(MAX_BYTES),
        "FRAMESTREAM_LIMITS_DECODE_TIMEOUT_S": str(DECODE_TIMEOUT_S)})
    run.start()
    stop, sent = threading.Event(), {"messages": 0, "tcp": 0}
    target = run.ranks()[0]
    attacker = threading.Thread(target=attack, args=(target, stop, sent), daemon=True)
    try:
        attacker.start()
        run.fault_start()
        run.produce(frames=frames)
        b = run.finish()
        stop.set()
        attacker.join(30)
        metrics = urllib.request.urlopen(target["metrics"], timeout=10).read().decode()
    finally:
        stop.set()
        code = run.stop()
    assert code == 0, run.log_tail()
    assert_conserved(b, len(frames))  # includes: every bad frame has its expected reason
    assert b.dead_letters == len(bad)
    assert b.reasons.get("timeout") == 1 and b.reasons.get("too_large") == 1
    preds = [json.loads(r.value) for r in results.read_topic(kafka_bootstrap,
                                                             topics["predictions"])]
    classified = {p["frame_id"] for p in preds}
    assert {f.frame_id for f in valid} <= classified
    log = run.logs[-1].read_text(errors="replace")
    batch_s = [float(s) for s in re.findall(r"batch \d+: .*, ([\d.]+)s$", log, re.M)]
    assert batch_s and max(batch_s) < 30, f"a micro-batch stalled: {max(batch_s)} s"
    malformed = sum(float(v) for v in re.findall(
        r'^framestream_rank_requests_total\{[^}]*op="MALFORMED"[^}]*\} (\S+)$', metrics, re.M))
    refused = sum(float(v) for v in re.findall(
        r'^framestream_rank_peers_total\{[^}]*event="(?:no_handshake|bad_handshake)"[^}]*\} '
        r'(\S+)$', metrics, re.M))
    assert malformed > 0 and refused > 0, metrics
    assert run.stats()["rank_restarts"] == 0  # nobody crashed
    record("hostile_input", f"{len(bad)} hostile + {len(valid)} unusual valid frames among "
           f"{good}; garbage TCP and malformed messages at rank 0 all along", prof, b,
           hostile_kinds=len(bad), valid_kinds=len(valid), max_batch_s=max(batch_s),
           garbage_messages=sent["messages"], garbage_connections=sent["tcp"],
           rank_counted_malformed=malformed, rank_counted_refused=refused)
