"""Hot swap: a version promoted mid-stream takes over at a micro-batch boundary on every rank,
with no frame lost and no batch answered by two versions."""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from pathlib import Path

import pytest

from framestream import results
from framestream.producer import fashion_frames, publish_frames
from models.registry import Registry
from tests.stream.helpers import start_stream, stop_stream, wait_until
from tests.helpers.registry import publish_random

pytestmark = [pytest.mark.spark, pytest.mark.kafka, pytest.mark.mpi, pytest.mark.slow, pytest.mark.ray]


def test_promotion_mid_stream_switches_every_rank_once_and_loses_nothing(
        kafka_bootstrap, new_topic, tmp_path: Path) -> None:
    topics = {"frames": new_topic(4, "frames"), "predictions": new_topic(4, "predictions"),
              "dlq": new_topic(4, "dlq")}
    registry = Registry(tmp_path / "registry")
    v1 = publish_random(registry, 1, accuracy=0.50)
    assert registry.promote(v1).promoted
    v2 = publish_random(registry, 2, v1, accuracy=0.60)

    total = 3000
    stream = start_stream(
        ["--ranks", "2", "--rank-threads", "1", "--registry", str(registry.root),
         "--bootstrap", kafka_bootstrap, "--topic", topics["frames"],
         "--predictions-topic", topics["predictions"], "--dlq-topic", topics["dlq"],
         "--checkpoint", str(tmp_path / "checkpoint"), "--endpoints", str(tmp_path / "ep.json"),
         "--max-offsets-per-trigger", "200", "--trigger-interval", "0.2"],
        tmp_path / "stream.log")
    try:
        wait_until((tmp_path / "ep.json").exists, 180, "the ranks to publish endpoints")
        producer = threading.Thread(target=publish_frames, args=(
            kafka_bootstrap, topics["frames"], fashion_frames(total)), kwargs={"rate": 300})
        producer.start()
        wait_until(lambda: sum(results.end_offsets(kafka_bootstrap, topics["predictions"])
                               .values()) >= 800, 180, "800 predictions from the first version")
        assert registry.promote(v2).promoted
        producer.join(60)
        wait_until(lambda: sum(results.end_offsets(kafka_bootstrap, topics["predictions"])
                               .values()) >= total, 240, f"all {total} predictions")
    finally:
        code = stop_stream(stream)
    assert code == 0, (tmp_path / "stream.log").read_text()[-3000:]

    preds = [json.loads(r.value) for r in results.read_topic(kafka_bootstrap,
                                                             topics["predictions"])]
    summary = results.summarize(total, [type("R", (), {"value": json.dumps(p)}) for p in preds],
                                [])
    assert summary.predictions == total and summary.conflicting == 0  # nothing lost or changed

    per_batch: dict[int, set[str]] = defaultdict(set)
    per_rank: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for p in preds:
        per_batch[p["batch_id"]].add(p["model_version"])
        per_rank[p["rank"]].append((p["batch_id"], p["model_version"]))
    assert all(len(v) == 1 for v in per_batch.values()), "a micro-batch mixed model versions"
    assert {p["model_version"] for p in preds} == {v1, v2}
    assert sorted(per_rank) == [0, 1]
    for rank, seen in per_rank.items():
        versions = [v for _, v in sorted(seen)]
        switches = sum(a != b for a, b in zip(versions, versions[1:]))
        assert versions[0] == v1 and versions[-1] == v2 and switches == 1, \
            f"rank {rank} switched {switches} times"
