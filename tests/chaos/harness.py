"""The chaos harness: a steady stream under one fault, then the books are checked.

Each chaos test starts the real job (``spark-submit jobs/stream_classify.py --ranks 2``, ranks on a
Ray gang, Spark's Kafka source and sink), runs a rate-limited producer of Fashion-MNIST frames with
a few hostile ones mixed in, injects one fault while the stream is busy, waits until every frame is
answered, stops the job and checks conservation from the topics themselves:

- every input offset has a prediction or a dead letter, never both, never neither;
- nothing else: no output names an offset that was not sent;
- a duplicate (a replay) is identical to the first copy but for when/where it was made;
- every hostile frame is in the DLQ with the reason its generator expects, bytes intact.

Recovery is computed afterwards from Kafka record timestamps (producer CreateTime for inputs,
Spark sink write time for outputs, one clock). A frame is *late* when its answer took longer than
the slowest normal one before the fault (p99) plus one second; ``recovery_s`` is the time from the
fault until the last late frame was answered (0: no frame was late), so it covers both the outage
and the catching up; ``stall_s`` is the longest stretch after the fault with no new output at all. Each fault's figures go to ``.state/chaos/results.json`` (the README
table is printed from it by ``python -m tests.chaos.report``).

Profiles (``FRAMESTREAM_CHAOS_PROFILE``): ``ci`` (default: small N, short faults, what CI runs) and
``long`` (``make chaos``: more frames, the broker down for 20 s).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from framestream import results
from framestream.atomic import write_atomic
from framestream.frames import CORRUPT_HEADER, EXPECT_HEADER
from framestream.hostile import hostile_mix
from framestream.paths import state_dir
from framestream.producer import ProducerSettings, fashion_frames, mix_in, publish_frames
from tests.stream.helpers import start_stream, stop_stream, wait_until

VERSION = "random-fashion_cnn"
RESULTS = state_dir() / "chaos" / "results.json"


@dataclass(frozen=True)
class Profile:
    name: str
    frames: int              # good frames per run
    rate: float              # frames/s from the producer
    hostile: int             # hostile frames mixed in
    request_timeout_s: float  # the executors' per-request deadline (re-send after it)
    stop_hold_s: float       # how long a rank stays SIGSTOPped (longer than the deadline)
    broker_outage_s: float   # how long the broker is down
    settle_s: float          # the fault comes this long after the first answers
    finish_s: float          # at most this long for everything to be answered after the fault


PROFILES = {
    "ci": Profile("ci", frames=1500, rate=100.0, hostile=6, request_timeout_s=3.0,
                  stop_hold_s=8.0, broker_outage_s=8.0, settle_s=3.0, finish_s=240.0),
    "long": Profile("long", frames=6000, rate=150.0, hostile=17, request_timeout_s=5.0,
                    stop_hold_s=20.0, broker_outage_s=20.0, settle_s=8.0, finish_s=420.0),
}


def profile() -> Profile:
    name = os.environ.get("FRAMESTREAM_CHAOS_PROFILE", "ci")
    if name not in PROFILES:
        raise ValueError(f"FRAMESTREAM_CHAOS_PROFILE={name!r}: expected one of {sorted(PROFILES)}")
    return PROFILES[name]


@dataclass
class Books:
    """What the topics say after a run."""

    frames_in: int
    predictions: int
    dead_letters: int
    duplicates: int
    conflicting: int
    extras: int                 # outputs naming an offset that was never sent
    missing: int                # inputs with no answer
    both: int                   # inputs with a prediction and a dead letter
    wrong_reason: int           # hostile frames whose DLQ reason is not the expected one
    recovery_s: float | None
    stall_s: float | None
    baseline_latency_p50_s: float | None
    max_latency_s: float | None
    reasons: dict[str, int] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)

    @property
    def conserved(self) -> bool:
        return (self.missing == self.extras == self.both == self.conflicting == 0
                and self.predictions + self.dead_letters == self.frames_in
                and self.wrong_reason == 0)


def _key(topic: str, partition: int, offset: int) -> tuple[str, int, int]:
    return (topic, int(partition), int(offset))


def books(bootstrap: str, topics: dict[str, str], t0: float | None = None) -> Books:
    """Read all three topics and check conservation; recovery figures when ``t0`` (the time the
    fault began) is given."""
    src = results.read_topic(bootstrap, topics["frames"])
    preds = results.read_topic(bootstrap, topics["predictions"])
    dlq = results.read_topic(bootstrap, topics["dlq"])
    sent = {_key(topics["frames"], r.partition, r.offset): r for r in src}
    first: dict[tuple[str, int, int], float] = {}  # input -> time of its first answer (s)
    answered: dict[tuple[str, int, int], dict[str, Any]] = {}
    dead: dict[tuple[str, int, int], tuple[str, bytes]] = {}
    duplicates = conflicting = extras = wrong = 0
    versions: dict[str, int] = {}
    for r in preds:
        p = json.loads(r.value)
        k = _key(p["topic"], p["partition"], p["offset"])
        if k not in sent:
            extras += 1
            continue
        first[k] = min(first.get(k, float("inf")), r.timestamp / 1000)
        if k in answered:
            duplicates += 1
            conflicting += results.identity(answered[k]) != results.identity(p)
            continue
        answered[k] = p
        versions[p["model_version"]] = versions.get(p["model_version"], 0) + 1
    for r in dlq:
        h = results.headers_of(r)
        k = _key(h["fs-dlq-topic"].decode(), int(h["fs-dlq-partition"]), int(h["fs-dlq-offset"]))
        if k not in sent:
            extras += 1
            continue
        first[k] = min(first.get(k, float("inf")), r.timestamp / 1000)
        got = (h["fs-dlq-reason"].decode(), bytes(r.value or b""))
        if k in dead:
            duplicates += 1
            conflicting += dead[k] != got
            continue
        dead[k] = got
        source = results.headers_of(sent[k])
        if EXPECT_HEADER in source and source[EXPECT_HEADER].decode() != got[0]:
            wrong += 1
        if got[1] != bytes(sent[k].value or b""):
            conflicting += 1  # a dead letter must carry the frame's bytes exactly
    for k, r in sent.items():  # a hostile frame must not be "classified"
        if CORRUPT_HEADER in results.headers_of(r) and k in answered:
            wrong += 1
    reasons: dict[str, int] = {}
    for reason, _ in dead.values():
        reasons[reason] = reasons.get(reason, 0) + 1
    missing = len([k for k in sent if k not in answered and k not in dead])
    both = len(answered.keys() & dead.keys())
    recovery = stall = base = worst = None
    if first:
        lat = {k: first[k] - sent[k].timestamp / 1000 for k in first}
        worst = round(max(lat.values()), 3)
        if t0 is not None:
            before = [v for k, v in lat.items() if first[k] < t0]
            base = round(float(np.median(before)), 3) if before else None
            # late = slower than anything normal before the fault (its p99) plus a second
            late = (float(np.percentile(before, 99)) if before else 0.0) + 1.0
            delayed = [first[k] for k, v in lat.items() if first[k] >= t0 and v > late]
            recovery = round(max(delayed) - t0, 3) if delayed else 0.0
            outs = sorted(t for t in first.values() if t >= t0)
            marks = [t0, *outs]
            stall = round(max(b - a for a, b in zip(marks, marks[1:])), 3) if outs else None
    return Books(len(sent), len(answered), len(dead), duplicates, conflicting, extras, missing,
                 both, wrong, recovery, stall, base, worst, reasons, versions)


def record(fault: str, what: str, prof: Profile, b: Books, **extra: Any) -> dict[str, Any]:
    """Store one fault's figures in .state/chaos/results.json (merged by fault name)."""
    entry = {"fault": fault, "what": what, "profile": prof.name, "at": time.time(),
             "conserved": b.conserved, **asdict(b), **extra}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    try:
        table = json.loads(RESULTS.read_text())
    except (FileNotFoundError, ValueError):
        table = {}
    table[f"{prof.name}:{fault}"] = entry
    write_atomic(RESULTS, json.dumps(table, indent=2, sort_keys=True))
    return entry


class ChaosStream:
    """The stream job under test, with its producer and the fault's clock."""

    def __init__(self, bootstrap: str, topics: dict[str, str], tmp: Path, prof: Profile,
                 extra_args: Sequence[str] = (), model: Sequence[str] = ("--version", VERSION),
                 env: dict[str, str] | None = None) -> None:
        self.bootstrap, self.topics, self.tmp, self.prof = bootstrap, topics, tmp, prof
        self.endpoints = tmp / "endpoints.json"
        self.args = ["--ranks", "2", "--rank-threads", "1", *model, "--bootstrap", bootstrap,
                     "--topic", topics["frames"], "--predictions-topic", topics["predictions"],
                     "--dlq-topic", topics["dlq"], "--checkpoint", str(tmp / "checkpoint"),
                     "--endpoints", str(self.endpoints), "--max-offsets-per-trigger", "200",
                     "--trigger-interval", "0.2", "--request-timeout",
                     str(prof.request_timeout_s), *extra_args]
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.logs: list[Path] = []
        self.producer: threading.Thread | None = None
        self.sent: Any = None
        self.t0: float | None = None
        self.t1: float | None = None
        self.total = prof.frames + prof.hostile

    # -- the job ---------------------------------------------------------------------------------
    def start(self, timeout: float = 240.0) -> None:
        log = self.tmp / f"stream-{len(self.logs)}.log"
        self.logs.append(log)
        ready = self.tmp / f"ready-{len(self.logs)}"
        before = json.loads(self.endpoints.read_text())["generation"] if self.endpoints.exists() \
            else 0
        saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)  # start_stream passes our environment on
        try:
            self.proc = start_stream([*self.args, "--ready-file", str(ready)], log)
        finally:
            for k, v in saved.items():
                os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
        wait_until(lambda: ready.exists() or self.proc.poll() is not None, timeout,
                   f"the stream to start (log {log})")
        assert self.proc.poll() is None, f"stream exited at start:\n{self.log_tail()}"
        wait_until(lambda: self.generation() > before, 60, "the ranks' endpoints")

    def generation(self) -> int:
        try:
            return int(json.loads(self.endpoints.read_text())["generation"])
        except (FileNotFoundError, ValueError, KeyError):
            return 0

    def ranks(self) -> list[dict[str, Any]]:
        return json.loads(self.endpoints.read_text())["ranks"]

    def stop(self) -> int:
        assert self.proc is not None
        code = stop_stream(self.proc)
        return code

    def kill(self) -> None:
        """kill -9 the whole job: spark-submit's JVM, the Python driver and Python workers."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def log_tail(self, n: int = 4000) -> str:
        return "\n".join(p.read_text(errors="replace")[-n:] for p in self.logs if p.exists())

    def stats(self) -> dict[str, Any]:
        """The driver's final stats line (after stop)."""
        text = self.logs[-1].read_text(errors="replace")
        lines = [line for line in text.splitlines() if line.startswith('{"batches"')]
        return json.loads(lines[-1]) if lines else {}

    # -- load ------------------------------------------------------------------------------------
    def produce(self, settings: ProducerSettings | None = None, seed: int = 1,
                until: threading.Event | None = None, frames: Iterable[Any] | None = None) -> None:
        """Send the profile's frames at its rate (hostile ones mixed in), or ``frames``; with
        ``until``, keep sending good frames after them until the event is set."""
        prof = self.prof
        bad = [(h.kind, h.data, h.expect.value) for h in hostile_mix(prof.hostile, seed=seed)]
        if frames is None:
            frames = mix_in(fashion_frames(prof.frames), bad, prof.frames, seed=seed)
        if until is not None:
            import itertools

            more = itertools.takewhile(lambda _: not until.is_set(), fashion_frames(10**9))
            frames = itertools.chain(frames, more)

        def run() -> None:
            self.sent = publish_frames(self.bootstrap, self.topics["frames"], frames,
                                       rate=prof.rate, settings=settings)

        self.producer = threading.Thread(target=run, name="chaos-producer", daemon=True)
        self.producer.start()

    def outputs(self) -> int:
        """Output records so far (predictions + dead letters, duplicates included)."""
        return sum(sum(results.end_offsets(self.bootstrap, self.topics[t]).values())
                   for t in ("predictions", "dlq"))

    def wait_outputs(self, n: int, timeout: float) -> None:
        wait_until(lambda: self.outputs() >= n, timeout, f"{n} outputs")

    def settle(self) -> None:
        """Wait until the stream is answering steadily, then a little more."""
        self.wait_outputs(min(200, self.prof.frames // 4), 180)
        time.sleep(self.prof.settle_s)  # let the stream run at the producer's pace first

    def fault_start(self) -> float:
        self.t0 = time.time()
        return self.t0

    def fault_end(self) -> float:
        self.t1 = time.time()
        return self.t1

    def finish(self, timeout: float | None = None) -> Books:
        """Wait for the producer and until every frame is answered; stop the job; the books."""
        timeout = timeout or self.prof.finish_s
        assert self.producer is not None
        self.producer.join(timeout)
        assert not self.producer.is_alive(), "the producer did not finish"
        assert self.sent is not None and self.sent.failed == 0, f"producer: {self.sent}"
        self.total = self.sent.sent
        deadline = time.monotonic() + timeout
        while True:
            if self.outputs() >= self.total:
                b = books(self.bootstrap, self.topics, self.t0)
                if b.missing == 0:
                    return b
            if time.monotonic() > deadline:
                b = books(self.bootstrap, self.topics, self.t0)
                raise AssertionError(f"{b.missing} of {b.frames_in} frames unanswered after "
                                     f"{timeout:.0f}s: {b}\n{self.log_tail()}")
            time.sleep(1.0)  # polling Kafka end offsets until the deadline


def assert_conserved(b: Books, total: int) -> None:
    assert b.frames_in == total, b
    assert b.missing == 0 and b.extras == 0 and b.both == 0, b
    assert b.conflicting == 0 and b.wrong_reason == 0, b
    assert b.predictions + b.dead_letters == b.frames_in, b


def rank_pids(endpoints: Path) -> list[int]:
    return [r["pid"] for r in json.loads(endpoints.read_text())["ranks"]]


def alive(pids: Iterable[int]) -> list[int]:
    import psutil

    return [p for p in pids if psutil.pid_exists(p)
            and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
