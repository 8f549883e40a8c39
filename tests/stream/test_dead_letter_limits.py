"""Issue 14 items 2 and 7 on the real engines (Kafka, spark-submit jobs/stream_classify.py, mpirun
ranks): a dead letter too big for Kafka's default request size no longer halts the stream, a frame
over the size limit is dead-lettered cut and marked, a missing or too small output topic stops the
job at start with the command that fixes it, and predictions are strict JSON."""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
import uuid
from pathlib import Path

import pytest

from framestream import results
from framestream.config import KafkaSettings
from framestream.frames import Frame
from framestream.producer import fashion_frames, make_producer, publish_frames
from launcher.gang import ServingGang
from framestream.kafka_admin import admin_client, delete_topics, ensure_topics
from tests.stream.helpers import run_stream, start_stream

pytestmark = [pytest.mark.kafka, pytest.mark.ray]
VERSION = "random-fashion_cnn"
# etl.records' header names, spelled out so this file also runs against the code before the fix
DLQ_SIZE, DLQ_SHA256, DLQ_TRUNCATED = "fs-dlq-value-size", "fs-dlq-value-sha256", "fs-dlq-truncated"
TEN_MIB = 10 * 1024 * 1024
MAX_BYTES = 2 * 1024 * 1024   # the stream's FRAMESTREAM_LIMITS_MAX_BYTES in the first test


def strict(raw: bytes) -> dict:
    def refuse(name: str) -> None:
        raise ValueError(f"not strict JSON: {name}")

    return json.loads(raw, parse_constant=refuse)


@pytest.fixture
def big_topics(kafka_bootstrap: str):
    """frames, predictions and frames.dlq allowing 10 MiB records (max.message.bytes)."""
    names = {k: f"{k}-{uuid.uuid4().hex[:12]}" for k in ("frames", "predictions", "dlq")}
    ensure_topics(kafka_bootstrap, names.values(), 4, configs={"max.message.bytes": str(TEN_MIB)})
    yield names
    delete_topics(kafka_bootstrap, names.values())


def junk(n: int, seed: int) -> bytes:
    return b"\x01" + random.Random(seed).randbytes(n - 1)  # no image format starts with \x01


@pytest.mark.spark
@pytest.mark.mpi
@pytest.mark.slow
def test_dead_letters_over_kafkas_default_size_fit_and_the_stream_goes_on(
        kafka_bootstrap: str, big_topics: dict[str, str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    near = junk(1_048_400, 1)          # undecodable, legal size: its dead letter kept whole
    over = junk(3 * 1024 * 1024, 2)    # over MAX_BYTES (too_large): its dead letter cut to fit
    good = list(fashion_frames(150))
    now = time.time()
    odd_ts = [Frame(f"cam-{i}", good[i].value, f"odd-ts-{i}", ts, "png")
              for i, ts in enumerate([math.nan, math.inf, -math.inf])]
    frames = [*good[:50], Frame("cam-0", near, "near", now), *good[50:100], *odd_ts,
              Frame("cam-1", over, "over", now), *good[100:]]
    producer = make_producer(kafka_bootstrap, max_request_bytes=TEN_MIB)
    try:
        sent = publish_frames(kafka_bootstrap, big_topics["frames"], frames, producer=producer)
    finally:
        producer.close(timeout=30)
    assert sent.sent == len(frames), sent

    monkeypatch.setenv("FRAMESTREAM_LIMITS_MAX_BYTES", str(MAX_BYTES))
    gang = ServingGang(2, ["--version", VERSION, "--threads", "1"], tmp_path / "endpoints.json",
                       tmp_path / "logs")
    gang.start()
    try:
        stats = run_stream(["--version", VERSION, "--bootstrap", kafka_bootstrap,
                            "--topic", big_topics["frames"],
                            "--predictions-topic", big_topics["predictions"],
                            "--dlq-topic", big_topics["dlq"],
                            "--checkpoint", str(tmp_path / "checkpoint"),
                            "--endpoints", str(tmp_path / "endpoints.json"),
                            "--request-timeout", "10", "--available-now"],
                           tmp_path / "stream.log", timeout=300)
    finally:
        gang.stop()
    n_pred = len(good) + len(odd_ts)
    assert (stats["predictions"], stats["dead_letters"]) == (n_pred, 2), stats

    preds = results.read_topic(kafka_bootstrap, big_topics["predictions"], count=n_pred)
    dlq = results.read_topic(kafka_bootstrap, big_topics["dlq"], count=2)
    summary = results.summarize(len(frames), preds, dlq)
    assert (summary.predictions, summary.dead_letters) == (n_pred, 2)  # frames in = out
    assert summary.duplicates == 0 and summary.conflicting == 0
    by_id = {p["frame_id"]: p for p in (strict(r.value) for r in preds)}  # strict JSON, all
    assert [by_id[f.frame_id]["capture_ts"] for f in odd_ts] == [None, None, None]

    letters = {results.headers_of(r)["fs-frame-id"]: (r, results.headers_of(r)) for r in dlq}
    record, h = letters[b"near"]
    assert h["fs-dlq-reason"] == b"undecodable" and record.value == near
    assert DLQ_TRUNCATED not in h and h[DLQ_SIZE] == str(len(near)).encode()
    assert h[DLQ_SHA256] == hashlib.sha256(near).hexdigest().encode()
    record, h = letters[b"over"]
    assert h["fs-dlq-reason"] == b"too_large" and h[DLQ_TRUNCATED] == b"value"
    assert h[DLQ_SIZE] == str(len(over)).encode()
    assert h[DLQ_SHA256] == hashlib.sha256(over).hexdigest().encode()
    assert MAX_BYTES <= len(record.value) < MAX_BYTES + 64 * 1024
    assert record.value == over[:len(record.value)]


@pytest.mark.spark
@pytest.mark.slow
def test_a_missing_dlq_topic_stops_the_job_at_start_with_the_fix(
        kafka_bootstrap: str, big_topics: dict[str, str], tmp_path: Path) -> None:
    # the test broker runs with auto.create.topics.enable=false (stack/kafka_broker.py); the check
    # asks for metadata without auto-creation, so "missing" means: not in the cluster's metadata
    missing = f"dlq-missing-{uuid.uuid4().hex[:8]}"
    publish_frames(kafka_bootstrap, big_topics["frames"], [Frame("cam-0", junk(100, 3), "x", 0.0)])
    log = tmp_path / "stream.log"
    proc = start_stream(["--ranks", "2", "--version", VERSION, "--bootstrap", kafka_bootstrap,
                         "--topic", big_topics["frames"],
                         "--predictions-topic", big_topics["predictions"],
                         "--dlq-topic", missing, "--checkpoint", str(tmp_path / "checkpoint"),
                         "--endpoints", str(tmp_path / "endpoints.json"), "--available-now"], log)
    try:
        code = proc.wait(120)
    finally:
        if proc.poll() is None:
            import os
            import signal

            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
    text = log.read_text(errors="replace")
    assert code == 2, text[-3000:]
    assert f"topic {missing!r} does not exist" in text
    assert f"kafka-topics.sh --bootstrap-server {kafka_bootstrap} --create --topic {missing}" in text
    assert "--config max.message.bytes=" in text
    assert not (tmp_path / "endpoints.json").exists()  # no ranks were started for nothing
    with admin_client(kafka_bootstrap) as admin:
        assert missing not in admin.list_topics()  # and the topic was not made by a write


def test_output_topics_too_small_or_missing_are_refused_with_the_command(
        kafka_bootstrap: str, new_topic) -> None:
    from framestream.topics import TopicsNotReady, check_output_topics

    small = f"dlq-small-{uuid.uuid4().hex[:8]}"
    ensure_topics(kafka_bootstrap, [small], 1, configs={"max.message.bytes": str(1_048_588)})
    missing = f"preds-missing-{uuid.uuid4().hex[:8]}"
    try:
        need = KafkaSettings().sink_request_bytes(10 * 1024 * 1024)
        kafka = KafkaSettings(bootstrap=kafka_bootstrap, predictions_topic=missing,
                              dlq_topic=small)
        with pytest.raises(TopicsNotReady) as err:
            check_output_topics(kafka, need, timeout_s=30)
        text = str(err.value)
        assert f"topic {missing!r} does not exist" in text
        assert (f"kafka-configs.sh --bootstrap-server {kafka_bootstrap} --alter --entity-type "
                f"topics --entity-name {small} --add-config max.message.bytes={need}") in text
        assert "accepts records of at most 1048588 bytes" in text
        ok = KafkaSettings(bootstrap=kafka_bootstrap, predictions_topic=new_topic(1),
                           dlq_topic=new_topic(1))
        check_output_topics(ok, need, timeout_s=30)  # framestream's topics pass (ensure_topics)
        check_output_topics(KafkaSettings(bootstrap=kafka_bootstrap, predictions_topic=small,
                                          dlq_topic=small), 1_048_588, timeout_s=30)
    finally:
        delete_topics(kafka_bootstrap, [small])
