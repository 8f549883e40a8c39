"""The benchmarks' pure helpers: statistics, burst summaries, stage classification; the fair
bench's partition spreading, sweep choice, round order, agreement counting and its report."""

from __future__ import annotations

import json
from collections import namedtuple

import numpy as np
import pytest

from bench import fair
from bench.breakdown import classify
from bench.common import median, percentile, ratio
from bench.kafka_io import summarize
from bench.lineup import LANES, PIPELINES, peer_args, split, sweeps, twin_points

Record = namedtuple("Record", "value timestamp")
ValueRecord = namedtuple("ValueRecord", "value")


def _pred(offset: int, capture: float, predicted: float, label: int = 1, cls: int = 1) -> Record:
    value = json.dumps({"topic": "t", "partition": 0, "offset": offset, "label": label,
                        "class_index": cls, "capture_ts": capture, "prediction_ts": predicted})
    return Record(value.encode(), int(predicted * 1000))


def test_percentile_interpolates_and_median_skips_none() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == pytest.approx(2.5)
    assert percentile([5.0], 99) == 5.0
    assert percentile([], 50) is None
    assert median([3.0, None, 1.0, 2.0]) == 2.0
    assert median([None]) is None
    assert ratio(3.0, 2.0) == 1.5 and ratio(None, 2.0) is None and ratio(1.0, 0) is None


def test_summarize_counts_each_offset_once_and_measures_from_first_capture() -> None:
    records = [_pred(0, 100.0, 101.0), _pred(1, 100.5, 102.0, cls=2), _pred(1, 100.5, 102.5, cls=2)]
    s = summarize(records, count=3)
    assert s["predictions"] == 2 and s["duplicates"] == 1 and s["missing"] == 1
    assert s["seconds"] == pytest.approx(2.0)          # last Kafka timestamp - first capture
    assert s["frames_per_s"] == pytest.approx(1.0)
    assert s["accuracy"] == 0.5
    assert s["latency_max_s"] == pytest.approx(1.5)


def test_summarize_of_a_backlog_counts_from_the_resume() -> None:
    records = [_pred(i, 90.0, 100.0 + i) for i in range(4)]
    s = summarize(records, count=4, started=99.0)
    assert s["seconds"] == pytest.approx(4.0) and s["frames_per_s"] == pytest.approx(1.0)


@pytest.mark.parametrize(("role", "stack", "stage"), [
    ("executor", "process 1:\"python\";main (worker.py:10);classify_batch (etl/classify.py:70);"
                 "decode_batch (etl/decode.py:200);decode_one (etl/decode.py:150);"
                 "_read (etl/decode.py:240);Image.resize (PIL/Image.py:2300)", "preprocess"),
    ("executor", "classify_batch (etl/classify.py:70);decode_one (etl/decode.py:150);"
                 "ImageFile.load (PIL/ImageFile.py:300)", "decode"),
    ("executor", "classify_batch (etl/classify.py:70);RankClient.submit (etl/client.py:120);"
                 "encode (framestream/wire.py:98)", "send"),
    ("executor", "classify_batch (etl/classify.py:80);predictions (etl/records.py:90)",
     "sink rows"),
    ("rank", "RankServer.run (mpi_workers/server_loop.py:78);RankServer._infer "
             "(mpi_workers/server_loop.py:151);forward (mpi_workers/server_loop.py:163);"
             "Conv2d.forward (torch/nn/modules/conv.py:500)", "forward"),
    ("rank", "RankServer._infer (mpi_workers/server_loop.py:151);forward "
             "(mpi_workers/server_loop.py:163);normalize (models/spec.py:70)", "preprocess"),
    ("rank", "RankServer._infer (mpi_workers/server_loop.py:151);RankServer._reply "
             "(mpi_workers/server_loop.py:97);encode (framestream/wire.py:98)", "reply"),
    ("rank", "somewhere_else (x.py:1)", "other Python"),
])
def test_classify_takes_the_innermost_known_frame(role: str, stack: str, stage: str) -> None:
    assert classify(role, stack) == stage


def test_summarize_times_to_the_pipelines_own_last_prediction_ts() -> None:
    late_kafka = Record(json.dumps({"topic": "t", "partition": 0, "offset": 0, "label": 1,
                                    "class_index": 1, "capture_ts": 90.0,
                                    "prediction_ts": 102.0}).encode(), 105_000)
    s = summarize([late_kafka], count=1, started=100.0)
    assert s["seconds"] == pytest.approx(2.0) and s["frames_per_s_kafka_ts"] == pytest.approx(0.2)




class _Cluster:
    """The metadata kafka-python's partitioner reads: one topic with ``n`` partitions."""

    def __init__(self, n: int) -> None:
        self.n = n

    def topics(self) -> set[str]:
        return {"t"}

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(self.n))

    available_partitions_for_topic = partitions_for_topic


def _partition_of(key: str, partitions: int) -> int:
    """Where kafka-python's producer puts a key: its own default partitioner, not a copy."""
    from kafka.partitioner.default import DefaultPartitioner

    return DefaultPartitioner().partition("t", key, key.encode(), b"", b"", _Cluster(partitions))


def test_the_old_keys_starve_two_of_four_partitions() -> None:
    # why bench/ needed this: cam-0..3 land on partitions 1 and 3 only
    assert {_partition_of(f"cam-{i}", 4) for i in range(4)} == {1, 3}


@pytest.mark.parametrize("partitions", [1, 2, 4, 8, 12])
def test_partition_keys_put_one_key_on_each_partition(partitions: int) -> None:
    keys = fair.partition_keys(partitions)
    assert len(set(keys)) == partitions
    assert [_partition_of(k, partitions) for k in keys] == list(range(partitions))
    frames = [keys[i % partitions] for i in range(10 * partitions)]  # round-robin, as sent
    landed = {p: 0 for p in range(partitions)}
    for k in frames:
        landed[_partition_of(k, partitions)] += 1
    assert set(landed.values()) == {10}


def test_partition_keys_reject_zero_partitions() -> None:
    with pytest.raises(ValueError, match="partitions"):
        fair.partition_keys(0)


def test_assign_covers_every_partition_once_and_refuses_idle_workers() -> None:
    parts = [3, 0, 2, 1]
    shares = [fair.assign(parts, w, 2) for w in range(2)]
    assert sorted(p for s in shares for p in s) == [0, 1, 2, 3]
    assert [len(s) for s in shares] == [2, 2]
    three = [fair.assign(list(range(4)), w, 3) for w in range(3)]
    assert sorted(len(s) for s in three) == [1, 1, 2]
    with pytest.raises(ValueError, match="idle"):
        fair.assign([0, 1], 0, 3)
    with pytest.raises(ValueError, match="worker 2"):
        fair.assign([0, 1], 2, 2)


def test_stats_and_spread() -> None:
    assert fair.stats([3.0, None, 1.0, 2.0]) == {"min": 1.0, "median": 2.0, "max": 3.0, "n": 3}
    assert fair.stats([]) == {"min": None, "median": None, "max": None, "n": 0}
    assert fair.spread({"0": 250, "1": 250}) == 1.0
    assert fair.spread({"0": 300, "1": 100}) == 3.0
    assert fair.spread({"0": 300, "1": 0}) is None and fair.spread({}) is None


def test_choose_takes_the_best_median_not_the_best_sample() -> None:
    sweep = [{"setting": {"batch": 64}, "frames_per_s": [100.0, 900.0, 110.0]},  # one lucky burst
             {"setting": {"batch": 256}, "frames_per_s": [300.0, 310.0, 290.0]},
             {"setting": {"batch": 1024}, "frames_per_s": [300.0, 300.0, 300.0]}]
    assert fair.choose(sweep) == {"batch": 256}
    assert fair.choose(sweep[2:] + sweep[1:2]) == {"batch": 1024}  # a tie: the earlier point
    assert fair.choose([{"setting": {"batch": 8}, "frames_per_s": []}]) == {"batch": 8}
    with pytest.raises(ValueError, match="no sweep point"):
        fair.choose([{"setting": {}, "frames_per_s": [None]}, {"setting": {}, "frames_per_s": []}])


def test_round_orders_are_seeded_permutations_that_vary() -> None:
    names = list(PIPELINES)
    orders = fair.round_orders(names, 5, seed=0)
    assert orders == fair.round_orders(names, 5, seed=0)
    assert orders != fair.round_orders(names, 5, seed=1)
    assert all(sorted(o) == sorted(names) for o in orders) and len(orders) == 5
    assert len({tuple(o) for o in orders}) > 1
    assert len({o[0] for o in orders}) > 1  # no pipeline always goes first


def _probs() -> np.ndarray:
    p = np.full((4, 3), 0.1, np.float32)
    p[0, 0] = 0.8
    p[1, 1] = 0.8
    p[2, 2] = 0.8
    p[3] = [0.45, 0.45 + 5e-5, 0.1 - 5e-5]  # a near-tie: class 1 by a hair over class 0
    return p


def _fpred(run: str, n: int, cls: int, part: int = 0, **extra: object) -> dict:
    return {"frame_id": f"{run}-{n}", "class_index": cls, "partition": part, **extra}


def test_agreement_counts_agree_flips_near_ties_lost_duplicates() -> None:
    classes, ties = fair.reference(_probs())
    assert classes.tolist() == [0, 1, 2, 1] and ties.tolist() == [False, False, False, True]
    preds = [_fpred("r", 0, 0, 0, worker="a"), _fpred("r", 1, 2, 1, worker="b"),  # 1: a real flip
             _fpred("r", 3, 0, 2, rank=1),                                     # near-tie flip
             _fpred("r", 4, 0, 3, worker="a"),  # frame 4 = set index 0: agrees
             _fpred("r", 4, 0, 3, worker="a"),  # a duplicate, same answer
             _fpred("r", 0, 1, 0, worker="b"),  # a duplicate with another answer
             _fpred("other", 2, 2)]             # not this run's frame
    got = fair.agreement(preds, "r", count=6, classes=classes, ties=ties)
    assert got["frames"] == 4 and got["lost"] == 2           # frames 2 and 5 never came
    assert (got["agree"], got["disagree"], got["disagree_near_tie"]) == (2, 1, 1)
    assert got["near_ties"] == 1 and got["duplicates"] == 2 and got["conflicting"] == 1
    assert got["foreign"] == 1
    assert got["per_partition"] == {"0": 1, "1": 1, "2": 1, "3": 1}
    assert got["per_worker"] == {"1": 1, "a": 2, "b": 1}


def test_parse_and_aggregate_give_every_pipeline_the_same_fields() -> None:
    classes, ties = fair.reference(_probs())
    samples = []
    for r, fps in enumerate((100.0, 300.0, 200.0)):
        recs = [ValueRecord(json.dumps(_fpred("r", 4 * r + i, int(classes[i]), i, worker=f"w{i % 2}"))
                       .encode()) for i in range(4)]
        samples.append({"frames_per_s": fps, "seconds": 4 / fps, "count": 4,
                        "producer": {"per_partition": {str(i): 1 for i in range(4)}},
                        "check": fair.agreement(fair.parse(recs), "r", 4, classes, ties)})
    agg = fair.aggregate(samples)
    assert agg["frames_per_s"] == {"min": 100.0, "median": 200.0, "max": 300.0, "n": 3}
    assert agg["frames"] == agg["frames_sent"] == 12 and agg["agreement"] == 1.0
    assert agg["per_partition_sent"] == {str(i): 3 for i in range(4)} == agg["per_partition"]
    assert agg["per_worker"] == {"w0": 6, "w1": 6} and agg["worker_spread"] == 1.0
    assert agg["lost"] == agg["duplicates"] == agg["disagree"] == 0 and agg["near_ties"] == 3


@pytest.mark.parametrize("profile", ["smoke", "quick", "full"])
def test_profiles_sweep_every_pipeline_and_run_enough_rounds(profile: str) -> None:
    from bench.stream import parse

    params = parse(["--profile", profile])
    assert params["rounds"] >= (1 if profile == "smoke" else 5)
    assert set(params["sweeps"]) == set(PIPELINES) == {split(x)[0] for x in params["pipelines"]}
    assert params["pipelines"] == list(LANES)
    assert params["timing"] == fair.TIMING and params["warmup"] == fair.WARMUP
    spark = params["sweeps"]["spark_udf"][0]
    assert {"batch", "arrow_batch", "min_partitions", "max_offsets"} <= set(spark)
    if profile != "smoke":
        assert len(params["sweeps"]["ray_actors"]) >= 3 and len(params["sweeps"]["spark_udf"]) > 1
    sw = sweeps(profile, 2)
    assert {"max_batch", "chunk_frames"} <= set(sw["framestream"][0])


def test_lanes_run_every_pipeline_as_shipped_and_at_the_other_runtime() -> None:
    assert split("framestream") == ("framestream", "auto")
    assert split("ray_actors") == ("ray_actors", "eager")
    assert split("ray_actors@onnxruntime") == ("ray_actors", "onnxruntime")
    for bad in ("kafka_streams", "ray_actors@tensorrt"):
        with pytest.raises(ValueError, match="unknown"):
            split(bad)
    shipped = {split(x) for x in LANES if "@" not in x}
    others = {split(x) for x in LANES if "@" in x}
    assert {n for n, _ in shipped} == {n for n, _ in others} == set(PIPELINES)
    assert all(r in ("eager", "onnxruntime") for _, r in others)


def test_a_lane_at_another_runtime_resweeps_only_the_batch_axis() -> None:
    base = {"workers": 2, "threads": 1, "batch": 1024}
    points = twin_points("ray_actors@onnxruntime", base, "quick", 2)
    assert [p["batch"] for p in points] == [64, 256, 1024]
    assert all({**p, "batch": 1024} == base for p in points)
    fs = twin_points("framestream@eager", {"ranks": 2, "max_batch": 77, "chunk_frames": 1024},
                     "quick", 2)
    assert sorted(p["max_batch"] for p in fs) == [20, 77, 256]
    assert {p["chunk_frames"] for p in fs} == {1024}


def test_targets_compare_as_shipped_and_like_with_like() -> None:
    from bench.stream import targets

    def lane(median: float, served: str = "") -> dict:
        return {"frames_per_s": {"median": median}, "runtime_served": served,
                "disagree": 0, "lost": 0, "duplicates": 0}
    res = {"pipelines": {"framestream": lane(3000, "onnxruntime"), "framestream@eager": lane(1500),
                         "ray_actors": lane(1000), "noframe": lane(1200),
                         "ray_actors@onnxruntime": lane(2000), "noframe@onnxruntime": lane(2400)}}
    t = targets(res)
    assert t["as_shipped"]["best_peer"] == "noframe" and t["as_shipped"]["ratio"] == 2.5
    assert t["same_runtime_eager"]["ratio"] == 1.25
    assert t["same_runtime_onnxruntime"]["best_peer"] == "noframe@onnxruntime"
    assert t["same_runtime_onnxruntime"]["ratio"] == 1.25
    assert t["framestream_runtime_served"] == "onnxruntime" and t["every_frame_agrees"]


def test_peer_args_name_the_peers_flags() -> None:
    assert peer_args({"batch": 256, "arrow_batch": 2048, "min_partitions": 8}) == [
        "--batch", "256", "--arrow-batch", "2048", "--min-partitions", "8"]


def _fair_doc(rounds: int = 5) -> dict:
    pipe = {"title": "T", "setting": {"batch": 256}, "startup_s": 1.5, "rounds": rounds,
            "sweep": [{}, {}, {}], "frames_per_s": {"min": 90.0, "median": 100.0, "max": 130.0},
            "frames": 100, "lost": 0, "duplicates": 0, "agree": 99, "disagree": 0,
            "disagree_near_tie": 1, "per_partition": {"0": 50, "1": 50},
            "per_worker": {"worker-0": 50, "worker-1": 50}}
    machine = {"cpu": "cpu", "logical_cores": 2, "memory_gib": 8, "gpu": {"available": False},
               "versions": {}, "loadavg_start": [0.1], "loadavg_end": [0.2]}
    return {"name": "fair", "profile": "quick", "started": "now", "wall_s": 10.0,
            "machine": machine, "plots": [],
            "params": {"frames": 100, "partitions": 2, "partition_keys": ["a", "b"],
                       "near_tie": 1e-4, "seed": 0, "timing": "TIMING-TEXT",
                       "warmup": "WARMUP-TEXT", "latency_s": 1.0},
            "results": {"model": {"version": "v0001", "net": "fashion_cnn",
                                  "holdout_accuracy": 0.9},
                        "model_alone": {"batch": 256, "threads": 2, "frames_per_s": 5000.0,
                                        "accuracy": 0.91, "near_ties": 1, "frames": 10000},
                        "pipelines": {"framestream": dict(pipe), "ray_actors": {
                            **pipe, "title": "Ray", "frames_per_s": {
                                "min": 40.0, "median": 50.0, "max": 60.0}}},
                        "targets": {"over_ray_actors": 2.0}}}


def test_report_renders_spread_counts_timing_and_only_fair_runs() -> None:
    from bench.report import fair_tables, is_fair

    doc = _fair_doc()
    assert is_fair(doc) and not is_fair(_fair_doc(rounds=2))
    assert not is_fair({**doc, "name": "stream"})
    text = "\n".join(fair_tables(doc, "fair-x.json"))
    assert "**100** (90–130)" in text and "**50** (40–60)" in text
    assert "0: 50 / 1: 50" in text and "worker-0: 50 / worker-1: 50" in text
    assert "99 / 0 / 1" in text and "2.00 × Ray" in text
    assert "TIMING-TEXT" in text and "WARMUP-TEXT" in text and "v0001" in text


def test_replace_section_writes_between_markers_and_keeps_the_rest() -> None:
    from bench.report import BEGIN, END, replace_section

    readme = "# t\n\n## A\na\n\n## Performance\nold figures\n\n## B\nb\n"
    once = replace_section(readme, "block one\n")
    assert once == f"# t\n\n## A\na\n\n## Performance\n\n{BEGIN}\nblock one\n{END}\n\n## B\nb\n"
    hand = once.replace(f"{END}\n", f"{END}\n\nhand-written reading\n")
    twice = replace_section(hand, "block two\n")
    assert "block two" in twice and "block one" not in twice
    assert "hand-written reading" in twice and twice.endswith("## B\nb\n")
    assert replace_section("# t\n", "x") == f"# t\n\n## Performance\n\n{BEGIN}\nx\n{END}\n"


def test_a_peer_asked_for_onnxruntime_runs_it_with_the_ranks_gate() -> None:
    from bench.frameset import model
    from mpi_workers.inference import forward

    eager, fast = model("fashion", threads=1), model("fashion", threads=1, runtime="onnxruntime")
    assert eager.runner is None and fast.runner is not None and fast.runtime.runtime == "onnxruntime"
    frames = np.random.default_rng(0).integers(0, 256, (40, 28, 28, 1), dtype=np.uint8)
    assert np.abs(forward(eager, frames) - forward(fast, frames)).max() <= 1e-4
