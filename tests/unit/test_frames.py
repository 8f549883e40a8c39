"""framestream.frames: the record format, header parsing (kafka-python and Spark/Arrow shapes),
image encoding; framestream.producer's pure parts: pacing, frame sources, mixing, settings."""

from __future__ import annotations

import io
import math

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from framestream import fashion_mnist
from framestream.errors import ConfigError
from framestream.frames import (CAPTURE_TS_HEADER, CORRUPT_HEADER, EXPECT_HEADER, FORMAT_HEADER,
                                FRAME_ID_HEADER, LABEL_HEADER, SAMPLE_HEADER, Frame, encode_image,
                                header_numbers, header_values, parse_headers)
from framestream.producer import (ProducerSettings, Summary, TokenBucket, fashion_frames,
                                  folder_frames, mix_in)

HEADERS_TYPE = pa.list_(pa.struct([("key", pa.string()), ("value", pa.binary())]))


def test_frame_headers_round_trip_through_kafka_python_shape() -> None:
    frame = Frame("cam-2", b"\x89PNG...", "ab12-7", 1767000000.123456, "png", 9,
                  "fashion-mnist:test:7", ((CORRUPT_HEADER, b"empty"),))
    headers = frame.headers()
    assert headers[:2] == [(FRAME_ID_HEADER, b"ab12-7"), (CAPTURE_TS_HEADER, b"1767000000.123456")]
    assert all(isinstance(k, str) and isinstance(v, bytes) for k, v in headers)
    assert Frame.from_record(b"cam-2", frame.value, headers) == frame


def test_from_record_tolerates_missing_and_bad_headers() -> None:
    frame = Frame.from_record(None, None, [(CAPTURE_TS_HEADER, b"soon"), (LABEL_HEADER, b"x")])
    assert frame.key == "" and frame.value == b"" and frame.frame_id == ""
    assert math.isnan(frame.capture_ts) and frame.label is None and frame.fmt is None


def test_parse_headers_reads_every_shape_and_the_last_repeat_wins() -> None:
    pairs = [("a", b"1"), ("b", b"2"), ("a", b"3")]
    expected = {"a": b"3", "b": b"2"}
    assert parse_headers(pairs) == expected
    assert parse_headers([{"key": k, "value": v} for k, v in pairs]) == expected  # Arrow to_pylist
    assert parse_headers(pa.array([pairs and [{"key": k, "value": v} for k, v in pairs]],
                                  HEADERS_TYPE)[0].as_py()) == expected
    assert parse_headers({"a": b"1"}) == {"a": b"1"}
    assert parse_headers([(b"k", None)]) == {"k": b""}
    assert parse_headers(None) == {}


def _headers_column() -> pa.Array:
    rows = [
        [{"key": FRAME_ID_HEADER, "value": b"f0"}, {"key": LABEL_HEADER, "value": b"3"}],
        None,  # a null list (a record without headers)
        [],
        [{"key": LABEL_HEADER, "value": b"1"}, {"key": LABEL_HEADER, "value": b"5"}],
        [{"key": LABEL_HEADER, "value": b"oops"}],
        [{"key": None, "value": b"?"}, {"key": FRAME_ID_HEADER, "value": None}],
    ]
    return pa.array(rows, HEADERS_TYPE)


def test_header_values_vectorised_over_an_arrow_column() -> None:
    column = _headers_column()
    assert header_values(column, LABEL_HEADER).to_pylist() == [b"3", None, None, b"5", b"oops",
                                                               None]
    assert header_values(column, FRAME_ID_HEADER).to_pylist() == [b"f0", None, None, None, None,
                                                                  None]
    assert header_values(column.slice(3), LABEL_HEADER).to_pylist() == [b"5", b"oops", None]
    chunked = pa.chunked_array([column.slice(0, 2), column.slice(2)])
    assert header_values(chunked, LABEL_HEADER).to_pylist() == header_values(
        column, LABEL_HEADER).to_pylist()
    assert header_values(pa.array([[], None], HEADERS_TYPE), "x").to_pylist() == [None, None]


def test_header_numbers_parse_or_mark_missing() -> None:
    column = _headers_column()
    labels = header_numbers(column, LABEL_HEADER, np.int64)
    assert labels.tolist() == [3, -1, -1, 5, -1, -1] and labels.dtype == np.int64
    ts = pa.array([[{"key": CAPTURE_TS_HEADER, "value": b"1767000000.5"}], []], HEADERS_TYPE)
    got = header_numbers(ts, CAPTURE_TS_HEADER)
    assert got[0] == 1767000000.5 and math.isnan(got[1])


def test_hostile_label_headers_are_missing_not_an_overflow() -> None:
    # issue 14 item 6: "99999999999999999999" raised OverflowError and failed the feed task
    hostile = [b"99999999999999999999", b"-99999999999999999999", b"9223372036854775808",
               b"1e3", b"abc", b"\xff", b"7", b"9223372036854775807"]
    column = pa.array([[{"key": LABEL_HEADER, "value": v}] for v in hostile], HEADERS_TYPE)
    labels = header_numbers(column, LABEL_HEADER, np.int64)
    assert labels.tolist() == [-1, -1, -1, -1, -1, -1, 7, 2**63 - 1]
    frame = Frame.from_record(b"k", b"v", [(LABEL_HEADER, b"99999999999999999999")])
    assert frame.label is None


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp", "bmp"])
@pytest.mark.parametrize("shape", [(28, 28), (28, 28, 1), (20, 30, 3), (20, 30, 4)])
def test_encode_image_is_readable_and_lossless_formats_are_exact(fmt: str, shape) -> None:
    array = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    data = encode_image(array, fmt, quality=100)
    image = Image.open(io.BytesIO(data))
    assert image.format == {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP", "bmp": "BMP"}[fmt]
    assert image.size == (shape[1], shape[0])
    lossless = fmt == "png" or (fmt in ("bmp", "webp") and shape[-1] != 4)  # bmp drops alpha;
    if lossless:  # webp may alter colour under alpha 0, and stores gray as RGB
        mode = {1: "L", 28: "L", 3: "RGB", 4: "RGBA"}[shape[-1]]
        assert np.array_equal(np.asarray(image.convert(mode)).reshape(array.shape), array)


def test_encode_image_refuses_what_it_cannot_encode() -> None:
    with pytest.raises(ValueError, match="unknown image format"):
        encode_image(np.zeros((2, 2), np.uint8), "gif")
    with pytest.raises(ValueError, match="uint8"):
        encode_image(np.zeros((2, 2), np.float32), "png")
    with pytest.raises(ValueError, match="HxW"):
        encode_image(np.zeros((2, 2, 2), np.uint8), "png")


class FakeTime:
    """A clock whose sleeps overshoot by 30% (a busy machine), to show pacing does not drift."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept = 0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept += 1
        self.now += seconds * 1.3


def test_token_bucket_keeps_the_average_rate_despite_late_wakeups() -> None:
    t = FakeTime()
    bucket = TokenBucket(200.0, clock=t.clock, sleep=t.sleep)
    for _ in range(1000):
        bucket.take()
    elapsed = t.now - 100.0
    assert 999 / 200 <= elapsed <= 999 / 200 + 0.05  # no drift from the 30% overshoots
    assert t.slept > 0


def test_token_bucket_allows_no_more_than_rate_plus_burst() -> None:
    t = FakeTime()
    bucket = TokenBucket(100.0, burst=5, clock=t.clock, sleep=t.sleep)
    t.now += 10.0  # idle for 10 s: the bucket holds at most 5, not 1000
    for _ in range(5):
        bucket.take()
    assert t.slept == 0
    bucket.take()
    assert t.slept == 1


def test_unpaced_bucket_never_sleeps() -> None:
    t = FakeTime()
    bucket = TokenBucket(0, clock=t.clock, sleep=t.sleep)
    for _ in range(100):
        bucket.take()
    assert t.slept == 0 and t.now == 100.0


def test_fashion_frames_carry_keys_labels_and_samples() -> None:
    images, labels = fashion_mnist.load("test")
    frames = list(fashion_frames(12, "png", sources=5, run="r1", clock=lambda: 5.0))
    assert [f.key for f in frames] == [f"cam-{i % 5}" for i in range(12)]
    assert [f.frame_id for f in frames] == [f"r1-{i}" for i in range(12)]
    assert [f.label for f in frames] == labels[:12].tolist()
    assert frames[3].sample == "fashion-mnist:test:3" and frames[3].capture_ts == 5.0
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(frames[3].value))), images[3])
    assert (FORMAT_HEADER, b"png") in frames[0].headers()


def test_folder_frames_publish_files_as_they_are(tmp_path) -> None:
    (tmp_path / "cam-a.jpg").write_bytes(b"jpeg bytes")
    (tmp_path / "cam-b.png").write_bytes(b"png bytes")
    (tmp_path / ".hidden").write_bytes(b"no")
    frames = list(folder_frames(tmp_path, count=3, run="r"))
    assert [(f.key, f.value, f.fmt) for f in frames] == [
        ("cam-a", b"jpeg bytes", "jpeg"), ("cam-b", b"png bytes", "png"),
        ("cam-a", b"jpeg bytes", "jpeg")]
    assert frames[1].headers()[-1] == (SAMPLE_HEADER, b"cam-b.png")
    with pytest.raises(FileNotFoundError):
        list(folder_frames(tmp_path / "missing"))


def test_mix_in_interleaves_labelled_corrupt_frames() -> None:
    good = [Frame(f"cam-{i}", b"ok", f"g{i}", 0.0) for i in range(50)]
    extra = [("empty", b"", "empty"), ("random_bytes", b"\x01", "undecodable")]
    mixed = list(mix_in(good, extra, total=50, seed=3, run="r"))
    assert len(mixed) == 52
    assert [f for f in mixed if f.frame_id.startswith("g")] == good  # order kept
    bad = [f for f in mixed if not f.frame_id.startswith("g")]
    assert [dict(f.extra)[CORRUPT_HEADER] for f in bad] == [b"empty", b"random_bytes"]
    assert [dict(f.extra)[EXPECT_HEADER] for f in bad] == [b"empty", b"undecodable"]
    positions = [i for i, f in enumerate(mixed) if f in bad]
    assert positions != [50, 51] and positions != [0, 1]  # interleaved, not appended
    assert [f.key for f in bad] == ["cam-0", "cam-1"]
    assert list(mix_in(good, extra, 50, seed=3, run="r", clock=lambda: 0.0)) == list(
        mix_in(good, extra, 50, seed=3, run="r", clock=lambda: 0.0))  # deterministic per seed


def test_summary_line_says_what_happened() -> None:
    s = Summary("frames", attempted=505, sent=500, failed=5, bytes=204800, seconds=2.0, corrupt=5,
                first_error="KafkaTimeoutError: gone")
    assert s.frames_per_s == 250.0
    assert s.line() == ("sent 500/505 frames (5 corrupt) to frames: 200.0 KiB in 2.00 s, "
                        "250.0 frames/s, 5 errors (first: KafkaTimeoutError: gone)")


@pytest.mark.parametrize(("name", "raw"), [("RATE", "-1"), ("FORMAT", "gif"), ("SOURCES", "0"),
                                           ("DEADLINE_S", "0")])
def test_bad_producer_setting_names_itself(name: str, raw: str) -> None:
    with pytest.raises(ConfigError, match=f"FRAMESTREAM_PRODUCER_{name}"):
        ProducerSettings.load(env={f"FRAMESTREAM_PRODUCER_{name}": raw})
