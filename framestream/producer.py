"""Publish frames to Kafka: frame sources, rate pacing, and a producer that reports what it did.

``python -m jobs.produce`` is the command line; this module is the library under it (benchmarks
and tests call :func:`publish_frames` directly).

Delivery: ``acks="all"``, idempotent (kafka-python's default: retries do not duplicate or reorder),
``linger_ms`` batching, retries without a count but within ``deadline_s``
(``delivery_timeout_ms``). When the broker goes away the producer keeps retrying until that
deadline, then the run stops sending, waits at most ``deadline_s`` more for what is in flight and
returns a :class:`Summary` with the failures: it never hangs on a dead broker.
"""

from __future__ import annotations

import itertools
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from framestream.errors import ServiceError
from framestream.frames import CORRUPT_HEADER, EXPECT_HEADER, Frame, encode_image
from framestream.settings import Section, section, setting

if TYPE_CHECKING:
    from framestream.kafka_clients import KafkaLike

log = logging.getLogger(__name__)

#: File suffix -> fs-format header, for --folder.
_SUFFIX_FORMATS = {".jpg": "jpeg", ".jpeg": "jpeg", ".png": "png", ".webp": "webp", ".gif": "gif",
                   ".bmp": "bmp", ".tif": "tiff", ".tiff": "tiff"}


class ProducerSettings(Section):
    """``FRAMESTREAM_PRODUCER_*``; ``python -m jobs.produce`` flags override them."""

    model_config = section("producer")

    rate: float = setting(0.0, "frames per second to publish (0 = as fast as possible)",
                          ok=lambda v: v >= 0, expected=">= 0 (0 = unpaced)")
    sources: int = setting(4, "cameras simulated: frames are keyed cam-0 .. cam-(K-1)",
                           ok=lambda v: v >= 1, expected=">= 1")
    format: str = setting("png", "encoding of generated frames",
                          ok=lambda v: v in ("png", "jpeg", "webp", "bmp"),
                          expected="png, jpeg, webp or bmp")
    quality: int = setting(90, "jpeg/webp quality", ok=lambda v: 1 <= v <= 100, expected="1..100")
    linger_ms: int = setting(5, "Kafka producer linger.ms (batching delay)",
                             ok=lambda v: 0 <= v <= 10_000, expected="0..10000")
    deadline_s: float = setting(30.0, "seconds to keep retrying a lost broker before giving up",
                                ok=lambda v: v > 0, expected="> 0")


@dataclass(frozen=True)
class Summary:
    """What one publish run did. ``sent`` counts frames the broker acknowledged."""

    topic: str
    attempted: int
    sent: int
    failed: int
    bytes: int
    seconds: float
    corrupt: int = 0
    first_error: str | None = None

    @property
    def frames_per_s(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        text = (f"sent {self.sent}/{self.attempted} frames ({self.corrupt} corrupt) to "
                f"{self.topic}: {self.bytes / 1024:.1f} KiB in {self.seconds:.2f} s, "
                f"{self.frames_per_s:.1f} frames/s, {self.failed} errors")
        if self.first_error:
            text += f" (first: {self.first_error})"
        return text


class TokenBucket:
    """Paces a loop to ``rate`` per second on average, with bursts of at most ``burst``.

    Tokens accrue from the clock, so time lost to a slow iteration or a late wake-up is made up
    later instead of drifting (sleep-per-item pacing falls behind by every overshoot).
    ``clock``/``sleep`` are injectable for tests. ``rate=0`` means unpaced.
    """

    def __init__(self, rate: float, burst: float | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if rate < 0:
            raise ValueError(f"rate must be >= 0, got {rate}")
        self.rate = rate
        self.capacity = burst if burst is not None else max(1.0, rate / 10)  # 100 ms worth
        self._clock, self._sleep = clock, sleep
        self._tokens = 1.0  # the first item goes at once, the rest at the rate
        self._last = clock()

    def take(self) -> None:
        """Block until one item may go."""
        if self.rate <= 0:
            return
        while True:
            now = self._clock()
            self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return
            self._sleep((1.0 - self._tokens) / self.rate)


# ---------------------------------------------------------------------------------------------
# frame sources


def run_id() -> str:
    """A short id that makes frame ids unique across producer runs."""
    return uuid.uuid4().hex[:8]


def fashion_frames(count: int, fmt: str = "png", sources: int = 4, quality: int = 90,
                   split: str = "test", run: str | None = None,
                   clock: Callable[[], float] = time.time) -> Iterator[Frame]:
    """``count`` Fashion-MNIST frames (cycling over the split), frame ``i`` from camera
    ``cam-{i % sources}``, with its true label and ``fs-sample = fashion-mnist:<split>:<index>``."""
    from framestream import fashion_mnist

    images, labels = fashion_mnist.load(split)
    run = run or run_id()
    for i in range(count):
        j = i % len(images)
        yield Frame(key=f"cam-{i % sources}", value=encode_image(images[j], fmt, quality),
                    frame_id=f"{run}-{i}", capture_ts=clock(), fmt=fmt, label=int(labels[j]),
                    sample=f"fashion-mnist:{split}:{j}")


def folder_frames(folder: Path, count: int | None = None, run: str | None = None,
                  clock: Callable[[], float] = time.time) -> Iterator[Frame]:
    """The files of ``folder`` (sorted, hidden ones skipped) published as they are, key = file
    name without suffix; cycles when ``count`` exceeds the number of files."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"--folder {folder} is not a directory")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise FileNotFoundError(f"--folder {folder} has no files")
    run = run or run_id()
    limit = len(files) if count is None else count
    for i, path in zip(range(limit), itertools.cycle(files)):
        yield Frame(key=path.stem, value=path.read_bytes(), frame_id=f"{run}-{i}",
                    capture_ts=clock(), fmt=_SUFFIX_FORMATS.get(path.suffix.lower()),
                    sample=path.name)


def mix_in(frames: Iterable[Frame], extra: list[tuple[str, bytes, str]], total: int,
           seed: int = 0, sources: int = 4, run: str | None = None,
           clock: Callable[[], float] = time.time) -> Iterator[Frame]:
    """Interleave corrupt frames ``(kind, bytes, expected reason)`` at random places (``seed``)
    among ``total`` good ones. Each carries ``fs-corrupt`` and ``fs-expect`` headers."""
    rng = random.Random(seed)
    slots = sorted(rng.randint(0, total) for _ in extra)  # insert before good frame #slot
    run = run or run_id()
    good = iter(frames)
    k = 0
    for position in range(total + 1):
        while k < len(extra) and slots[k] == position:
            kind, data, expect = extra[k]
            yield Frame(key=f"cam-{k % sources}", value=data, frame_id=f"{run}-corrupt-{k}",
                        capture_ts=clock(), extra=((CORRUPT_HEADER, kind.encode()),
                                                   (EXPECT_HEADER, expect.encode())))
            k += 1
        if position < total:
            frame = next(good, None)
            if frame is None:
                return
            yield frame


# ---------------------------------------------------------------------------------------------
# publishing


def make_producer(bootstrap: "KafkaLike", settings: ProducerSettings | None = None,
                  max_request_bytes: int = 1_048_576) -> Any:
    """A kafka-python producer configured for frames (acks=all, idempotent); ServiceError if no
    broker answers. ``bootstrap``: a string or KafkaSettings; the producer carries the
    FRAMESTREAM_KAFKA_* security settings either way (:mod:`framestream.kafka_clients`)."""
    from kafka.errors import KafkaError

    from framestream import kafka_clients

    s = settings or ProducerSettings.load()
    deadline_ms = int(s.deadline_s * 1000)
    try:
        return kafka_clients.producer(
            bootstrap, client_id="framestream-producer", acks="all",
            linger_ms=s.linger_ms, enable_idempotence=True,
            request_timeout_ms=max(1000, min(30_000, deadline_ms - s.linger_ms)),
            delivery_timeout_ms=max(deadline_ms, 1000 + s.linger_ms),
            max_block_ms=deadline_ms, max_request_size=max_request_bytes)
    except KafkaError as exc:
        where = kafka_clients.settings_of(bootstrap).bootstrap
        raise ServiceError(f"no Kafka broker answers at {where} ({type(exc).__name__}: {exc});"
                           f" start one with `make up` or pass --bootstrap") from exc


def publish_frames(bootstrap: "KafkaLike", topic: str, frames: Iterable[Frame], rate: float = 0.0,
                   progress: Callable[[int], object] | None = None,
                   settings: ProducerSettings | None = None, producer: Any = None) -> Summary:
    """Send every frame to ``topic`` (at ``rate`` frames/s; 0 = as fast as possible).

    Returns a :class:`Summary`; raises :class:`ServiceError` only when no broker answers at all
    at the start. After the first failed delivery (the broker is gone for longer than
    ``settings.deadline_s``) it stops sending and reports. ``producer`` is for tests and reuse;
    one made here is closed here.
    """
    from kafka.errors import KafkaError

    s = settings or ProducerSettings.load()
    own = producer is None
    producer = producer or make_producer(bootstrap, s)
    bucket = TokenBucket(rate)
    lock = threading.Lock()
    state = {"sent": 0, "failed": 0, "error": None}

    def ok(_metadata: object) -> None:
        with lock:
            state["sent"] += 1

    def failed(exc: BaseException) -> None:
        with lock:
            state["failed"] += 1
            if state["error"] is None:
                state["error"] = f"{type(exc).__name__}: {exc}"

    attempted = nbytes = corrupt = 0
    start = time.monotonic()
    try:
        for frame in frames:
            if state["failed"]:
                log.error("stopping after a failed delivery: %s", state["error"])
                break
            bucket.take()
            try:
                future = producer.send(topic, key=frame.key.encode(), value=frame.value,
                                       headers=frame.headers())
            except KafkaError as exc:  # metadata or buffer space not available within max_block
                failed(exc)
                attempted += 1
                break
            future.add_callback(ok)
            future.add_errback(failed)
            attempted += 1
            nbytes += len(frame.value)
            corrupt += any(k == CORRUPT_HEADER for k, _ in frame.extra)
            if progress is not None:
                progress(1)
        try:
            producer.flush(timeout=s.deadline_s)
        except KafkaError as exc:
            log.error("flush gave up after %.1fs (FRAMESTREAM_PRODUCER_DEADLINE_S): %s",
                      s.deadline_s, exc)
    finally:
        if own:
            producer.close(timeout=s.deadline_s)
    seconds = time.monotonic() - start
    with lock:
        sent, fails, error = state["sent"], state["failed"], state["error"]
    unaccounted = attempted - sent - fails  # never acknowledged nor failed within the deadline
    if unaccounted > 0:
        fails += unaccounted
        error = error or f"{unaccounted} frames unacknowledged after {s.deadline_s:.1f}s"
    return Summary(topic, attempted, sent, fails, nbytes, seconds, corrupt, error)
