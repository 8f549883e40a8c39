"""The poison-pill frame (issue 14 item 2): undecodable frames whose dead letters are larger than
Kafka's default 1 MiB request (one just under 1 MiB plus headers, one of 3 MiB, both under the
10 MiB frame limit) mixed into the chaos stream. Before the fix the sink's producer refused the
dead letter (RecordTooLargeException), the task failed 4 times and the query stopped, on every
restart. Now: conservation holds, both dead letters carry the frame's bytes whole, and the stream
never stops."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import pytest

from framestream.hostile import hostile_mix
from framestream.producer import fashion_frames, make_producer, mix_in, publish_frames
from tests.chaos.harness import ChaosStream, Profile, assert_conserved, record

pytestmark = [pytest.mark.chaos, pytest.mark.spark, pytest.mark.kafka, pytest.mark.mpi,
              pytest.mark.slow]

PILLS = {"poison_near_1mib": 1_048_400, "poison_3mib": 3 * 1024 * 1024}


def pill(size: int, seed: int) -> bytes:
    return b"\x01" + random.Random(seed).randbytes(size - 1)  # no image format starts with \x01


def test_poison_pill_frames_do_not_stop_the_stream(kafka_bootstrap: str, topics: dict[str, str],
                                                   tmp_path: Path, prof: Profile) -> None:
    bad = [(h.kind, h.data, h.expect.value) for h in hostile_mix(prof.hostile, seed=4)]
    bad += [(kind, pill(size, i), "undecodable") for i, (kind, size) in enumerate(PILLS.items())]
    frames = list(mix_in(fashion_frames(prof.frames), bad, prof.frames, seed=4))
    run = ChaosStream(kafka_bootstrap, topics, tmp_path, prof)
    run.start()
    producer = make_producer(kafka_bootstrap, max_request_bytes=4 * 1024 * 1024)  # the pills

    def send() -> None:
        run.sent = publish_frames(kafka_bootstrap, topics["frames"], frames, rate=prof.rate,
                                  producer=producer)

    try:
        run.fault_start()  # the pills are in the stream from the start
        run.producer = threading.Thread(target=send, name="chaos-producer", daemon=True)
        run.producer.start()
        b = run.finish()
    finally:
        code = run.stop()
        producer.close(timeout=30)
    log = run.log_tail(200_000)
    assert code == 0, log[-4000:]
    assert "RecordTooLarge" not in log and "query failed" not in log
    assert_conserved(b, len(frames))  # includes: each dead letter carries its frame's bytes
    assert b.dead_letters == len(bad) and b.reasons.get("undecodable", 0) >= len(PILLS)
    assert run.stats()["rank_restarts"] == 0
    record("poison_pill", f"{len(PILLS)} undecodable frames of {PILLS['poison_near_1mib']:,} and "
           f"{PILLS['poison_3mib']:,} bytes (dead letters over Kafka's 1 MiB default) + "
           f"{prof.hostile} hostile among {prof.frames}", prof, b, pill_bytes=list(PILLS.values()))
