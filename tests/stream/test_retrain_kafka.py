"""LINE's training path: labeled frames on Kafka -> the stream's ETL in a Spark job -> ZeroMQ ->
mpirun training ranks -> a registry version that has learned."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from framestream.frames import LABEL_HEADER, Frame
from framestream.hostile import hostile_mix
from framestream.producer import fashion_frames, mix_in, publish_frames
from models.registry import Registry
from tests.stream.helpers import SPARK_SUBMIT, stream_env

pytestmark = [pytest.mark.spark, pytest.mark.kafka, pytest.mark.mpi, pytest.mark.slow, pytest.mark.ray]


def test_ranks_train_on_labeled_frames_fed_by_spark(kafka_bootstrap, new_topic, tmp_path: Path):
    import subprocess

    from framestream.paths import REPO

    topic = new_topic(4, "labels")
    n = 3000
    bad = hostile_mix(3, seed=1)
    # good images whose fs-label no rank can train on (issue 14 item 6): an int64 overflow, a
    # negative one, one past the 10 classes, not numbers; each must be counted as rejected
    image = next(fashion_frames(1, split="train")).value
    hostile_labels = [Frame(f"cam-{i}", image, f"label-{i}", 0.0, "png",
                            extra=((LABEL_HEADER, label),))
                      for i, label in enumerate([b"99999999999999999999", b"-2", b"10",
                                                 b"4294967306", b"abc", b"3.5", b""])]
    sent = publish_frames(kafka_bootstrap, topic, [*hostile_labels, *mix_in(
        fashion_frames(n, split="train"), [(h.kind, h.data, h.expect.value) for h in bad], n)])
    assert sent.sent == n + len(bad) + len(hostile_labels)

    registry = tmp_path / "registry"
    cmd = [SPARK_SUBMIT, "--conf", "spark.ui.enabled=false", str(REPO / "jobs/retrain_kafka.py"),
           "--ranks", "2", "--bootstrap", kafka_bootstrap, "--topic", topic,
           "--work-dir", str(tmp_path / "work"), "--timeout", "300", "--",
           "--epochs", "3", "--batch-size", "64", "--registry", str(registry),
           "--checkpoint-dir", str(tmp_path / "ckpt"), "--holdout-limit", "2000", "--no-progress"]
    proc = subprocess.run(cmd, env=stream_env(), cwd=REPO, capture_output=True, text=True,
                          timeout=400)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])

    assert result["feed"]["fed"] == n
    assert result["feed"]["rejected"] == len(bad) + len(hostile_labels)
    assert sum(result["feed"]["per_rank"]) >= n and min(result["feed"]["per_rank"]) > 0
    assert result["holdout_accuracy"] > 0.6  # chance is 0.1: the ranks learned from the feed
    manifest = Registry(registry).manifest(result["version"])
    assert manifest.data["source"].startswith("kafka") and topic in manifest.data["range"]
    assert manifest.world_size == 2 and result["promoted"]
