"""The main job end to end, every engine real: Kafka -> spark-submit jobs/stream_classify.py
(Spark's Kafka source, executors decode) -> ZeroMQ -> mpirun ranks -> predictions / frames.dlq."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from etl.decode import decode_batch
from framestream import frames, results
from framestream.producer import fashion_frames, mix_in, publish_frames
from launcher.gang import ServingGang
from models.nets import DEFAULT_SPECS
from mpi_workers.model_cache import ModelCache
from mpi_workers.inference import forward
from framestream.hostile import hostile_mix
from tests.stream.helpers import run_stream

pytestmark = [pytest.mark.spark, pytest.mark.kafka, pytest.mark.mpi, pytest.mark.slow, pytest.mark.ray]
VERSION = "random-fashion_cnn"


def stream_args(bootstrap: str, topics: dict[str, str], tmp: Path, ranks: int = 2,
                checkpoint: str = "") -> list[str]:
    """Flags for the stream job; ``ranks=0`` attaches to ranks published in tmp/endpoints.json."""
    launch = ["--ranks", str(ranks), "--rank-threads", "1"] if ranks else []
    return [*launch, "--version", VERSION,
            "--bootstrap", bootstrap, "--topic", topics["frames"],
            "--predictions-topic", topics["predictions"], "--dlq-topic", topics["dlq"],
            "--checkpoint", checkpoint or str(tmp / "checkpoint"),
            "--endpoints", str(tmp / "endpoints.json"),
            "--request-timeout", "10"]


@pytest.fixture
def topics(new_topic) -> dict[str, str]:
    return {"frames": new_topic(4, "frames"), "predictions": new_topic(4, "predictions"),
            "dlq": new_topic(4, "dlq")}


def test_conservation_and_scores_equal_the_model_run_locally(kafka_bootstrap, topics, tmp_path):
    n_good = 600
    hostile = hostile_mix(8, seed=3)
    sent = publish_frames(kafka_bootstrap, topics["frames"], mix_in(
        fashion_frames(n_good), [(h.kind, h.data, h.expect.value) for h in hostile], n_good))
    assert sent.sent == n_good + len(hostile)

    # ranks started on their own (as `mpirun -n 2 python -m mpi_workers.serve` would be); the
    # stream attaches to them with --endpoints instead of launching its own
    gang = ServingGang(2, ["--version", VERSION, "--threads", "1"], tmp_path / "endpoints.json",
                       tmp_path / "logs")
    published = gang.start()
    try:
        stats = run_stream([*stream_args(kafka_bootstrap, topics, tmp_path, ranks=0),
                            "--available-now"], tmp_path / "stream.log", timeout=300)
        scraped = [urllib.request.urlopen(r.metrics, timeout=10).read().decode()
                   for r in published.ranks]
    finally:
        gang.stop()
    assert stats["predictions"] == n_good and stats["dead_letters"] == len(hostile)
    assert stats["rank_restarts"] == 0
    # Spark logs at WARN by default: none of its INFO lines (framestream's own INFO is kept)
    spark_info = re.findall(r"^\d\d/\d\d/\d\d \d\d:\d\d:\d\d INFO .*$",
                            (tmp_path / "stream.log").read_text(errors="replace"), re.M)
    assert not spark_info, spark_info[:5]
    served = [float(re.search(r"^framestream_rank_frames_total\{[^}]*\} (\S+)$", text, re.M)[1])
              for text in scraped]
    assert sum(served) == n_good and all(s > 0 for s in served)  # Prometheus counts, spread
    assert all('framestream_rank_model_info{rank="' in text and VERSION in text
               for text in scraped)

    preds = results.read_topic(kafka_bootstrap, topics["predictions"], count=n_good, timeout=60)
    dlq = results.read_topic(kafka_bootstrap, topics["dlq"], count=len(hostile), timeout=60)
    summary = results.summarize(n_good + len(hostile), preds, dlq)
    assert (summary.predictions, summary.dead_letters) == (n_good, len(hostile))
    assert summary.duplicates == 0 and summary.conflicting == 0
    # every corrupt frame is in the DLQ with the reason its generator expects, bytes intact
    by_kind = {h.kind: h for h in hostile}
    for record in dlq:
        h = results.headers_of(record)
        expected = by_kind[h[frames.CORRUPT_HEADER].decode()]
        assert h["fs-dlq-reason"].decode() == expected.expect.value
        assert record.value == expected.data

    # correctness: what the ranks answered == the model run here on the same decoded images
    source = results.read_topic(kafka_bootstrap, topics["frames"], timeout=60)
    by_offset = {(r.partition, r.offset): r for r in source}
    answers = [json.loads(r.value) for r in preds]
    raw = [by_offset[(a["partition"], a["offset"])].value for a in answers]
    decoded = decode_batch(raw, DEFAULT_SPECS["fashion_cnn"])
    assert len(decoded.ok_index) == len(raw)
    local = forward(ModelCache(None, "cpu", default=VERSION).get(VERSION), decoded.images, 256)
    for a, scores in zip(answers, local):
        for t in a["topk"]:
            assert abs(t["score"] - scores[t["index"]]) < 1e-5
        assert a["class_index"] == int(np.argmax(scores))
        assert a["model_version"] == VERSION and a["frame_id"] and a["capture_ts"] > 0
        assert a["label"] is not None


def _all_accounted(bootstrap: str, topics: dict[str, str], total: int) -> results.Summary:
    preds = results.read_topic(bootstrap, topics["predictions"], timeout=30)
    dlq = results.read_topic(bootstrap, topics["dlq"], timeout=30)
    return results.summarize(total, preds, dlq)


def _offsets_covered(bootstrap: str, topics: dict[str, str]) -> None:
    """Every source offset has exactly one distinct answer: a prediction or a dead letter."""
    source = {(r.partition, r.offset) for r in results.read_topic(bootstrap, topics["frames"])}
    answered = {(json.loads(r.value)["partition"], json.loads(r.value)["offset"])
                for r in results.read_topic(bootstrap, topics["predictions"])}
    dead = {(int(results.headers_of(r)["fs-dlq-partition"]),
             int(results.headers_of(r)["fs-dlq-offset"]))
            for r in results.read_topic(bootstrap, topics["dlq"])}
    assert answered | dead == source and not answered & dead


def test_driver_killed_mid_stream_resumes_from_its_checkpoint(kafka_bootstrap, topics, tmp_path):
    from tests.stream.helpers import start_stream, wait_until

    total = 2000
    publish_frames(kafka_bootstrap, topics["frames"], fashion_frames(total))
    # the checkpoint as a URI: Spark's offsets and framestream's version pins both go through
    # Hadoop's FileSystem API (a driver restarted on another host reads the same URI)
    checkpoint = (tmp_path / "shared" / "checkpoint").as_uri()
    args = [*stream_args(kafka_bootstrap, topics, tmp_path, checkpoint=checkpoint),
            "--max-offsets-per-trigger", "200", "--trigger-interval", "0.2"]
    first = start_stream(args, tmp_path / "first.log")
    try:
        wait_until(lambda: sum(results.end_offsets(kafka_bootstrap, topics["predictions"])
                               .values()) >= 400, 240, "the first 400 predictions")
    finally:
        import os
        import signal

        os.killpg(first.pid, signal.SIGKILL)  # the whole driver: JVM, Python driver, workers
        first.wait(30)
    published = json.loads((tmp_path / "endpoints.json").read_text())
    import psutil

    wait_until(lambda: not any(psutil.pid_exists(r["pid"]) for r in published["ranks"]), 60,
               "the orphaned ranks to exit with their driver")
    before = sum(results.end_offsets(kafka_bootstrap, topics["predictions"]).values())
    assert before < total, "the stream finished before it could be killed; send more frames"

    stats = run_stream([*args, "--available-now"], tmp_path / "second.log", timeout=300)
    assert stats["frames"] > 0
    summary = _all_accounted(kafka_bootstrap, topics, total)
    assert summary.predictions == total and summary.dead_letters == 0
    assert summary.conflicting == 0  # a replayed offset got the very same answer
    _offsets_covered(kafka_bootstrap, topics)
    pins = sorted((tmp_path / "shared" / "checkpoint" / "framestream-pins").glob("*.json"))
    assert len(pins) >= 2 and not (tmp_path / "file:").exists()


def test_rank_killed_mid_stream_is_relaunched_and_nothing_is_lost(kafka_bootstrap, topics,
                                                                   tmp_path):
    import os
    import signal
    import threading

    from tests.stream.helpers import start_stream, stop_stream, wait_until

    total = 3000
    args = [*stream_args(kafka_bootstrap, topics, tmp_path), "--max-offsets-per-trigger", "300",
            "--trigger-interval", "0.2", "--request-timeout", "3"]
    stream = start_stream(args, tmp_path / "stream.log")
    try:
        wait_until((tmp_path / "endpoints.json").exists, 180, "the ranks to publish endpoints")
        producer = threading.Thread(target=publish_frames, args=(
            kafka_bootstrap, topics["frames"], fashion_frames(total)), kwargs={"rate": 250})
        producer.start()
        wait_until(lambda: sum(results.end_offsets(kafka_bootstrap, topics["predictions"])
                               .values()) >= 300, 180, "the first 300 predictions")
        victim = json.loads((tmp_path / "endpoints.json").read_text())["ranks"][1]
        os.kill(victim["pid"], signal.SIGKILL)
        producer.join(60)
        wait_until(lambda: sum(results.end_offsets(kafka_bootstrap, topics["predictions"])
                               .values()) >= total, 240, f"{total} predictions after the kill")
        generation = json.loads((tmp_path / "endpoints.json").read_text())["generation"]
    finally:
        code = stop_stream(stream)
    assert code == 0, (tmp_path / "stream.log").read_text()[-3000:]
    assert generation == 2
    log = (tmp_path / "stream.log").read_text()
    assert '"rank_restarts": 1' in log
    summary = _all_accounted(kafka_bootstrap, topics, total)
    assert summary.predictions == total and summary.conflicting == 0
    _offsets_covered(kafka_bootstrap, topics)


def _answers(bootstrap: str, predictions: str, dlq: str, n_pred: int, n_dead: int
             ) -> tuple[dict[tuple[int, int], dict], dict[tuple[int, int], tuple]]:
    """Predictions without the fields that say when and where a copy was made, and dead
    letters (bytes + headers), both by source (partition, offset)."""
    preds = {}
    for r in results.read_topic(bootstrap, predictions, count=n_pred, timeout=60):
        p = json.loads(r.value)
        del p["prediction_ts"], p["rank"]
        preds[(p["partition"], p["offset"])] = p
    dead = {}
    for r in results.read_topic(bootstrap, dlq, count=n_dead, timeout=60):
        h = results.headers_of(r)
        dead[(int(h["fs-dlq-partition"]), int(h["fs-dlq-offset"]))] = (r.key, r.value,
                                                                       sorted(h.items()))
    return preds, dead


def test_the_same_frames_batched_differently_give_the_same_records(kafka_bootstrap, topics,
                                                                    new_topic, tmp_path):
    """What a replay after a crash may do: same offsets, same micro-batches, same pinned version,
    but requests of other sizes grouped into other forward passes on the ranks."""
    n_good, hostile = 500, hostile_mix(6, seed=5)
    publish_frames(kafka_bootstrap, topics["frames"], mix_in(
        fashion_frames(n_good), [(h.kind, h.data, h.expect.value) for h in hostile], n_good))
    runs = {"defaults": [],
            "odd": ["--chunk-frames", "5", "--max-batch", "7", "--credits", "2"]}
    got = {}
    for name, batching in runs.items():
        out = {"frames": topics["frames"], "predictions": new_topic(4, f"predictions-{name}"),
               "dlq": new_topic(4, f"dlq-{name}")}
        run_dir = tmp_path / name  # a fresh checkpoint: the whole topic again
        run_dir.mkdir()
        stats = run_stream([*stream_args(kafka_bootstrap, out, run_dir),
                            "--max-offsets-per-trigger", "120", *batching, "--available-now"],
                           run_dir / "stream.log", timeout=300)
        assert (stats["predictions"], stats["dead_letters"]) == (n_good, len(hostile))
        got[name] = _answers(kafka_bootstrap, out["predictions"], out["dlq"], n_good,
                             len(hostile))
    (preds_a, dead_a), (preds_b, dead_b) = got["defaults"], got["odd"]
    assert len(preds_a) == n_good and dead_a == dead_b
    differing = [k for k in preds_a if preds_a[k] != preds_b.get(k)]
    assert not differing, (f"{len(differing)} of {n_good} predictions differ, e.g. "
                           f"{preds_a[differing[0]]} vs {preds_b.get(differing[0])}")
