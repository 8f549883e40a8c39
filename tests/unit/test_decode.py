"""etl.decode: every unusual-but-valid frame decodes to what a viewer shows; every hostile frame
gets its precise reason; batches keep row indexes straight over every column type."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from etl.decode import (DecodedBatch, FrameLimits, FrameRejected, Reason, decode_batch, decode_one,
                        sniff_format)
from framestream import fashion_mnist
from framestream.errors import ConfigError
from models.spec import PreprocessSpec
from framestream import hostile

FASHION = PreprocessSpec()  # 28x28 grayscale, what the Fashion CNN serves


def _spec(height: int, width: int, channels: int) -> PreprocessSpec:
    return PreprocessSpec(height, width, channels, (0.5,) * channels, (0.25,) * channels)


@pytest.fixture(scope="module")
def fashion_png() -> tuple[list[bytes], np.ndarray]:
    images, _ = fashion_mnist.load("test")
    return [hostile.encode(a, "PNG") for a in images[:64]], images[:64]


# ---------------------------------------------------------------------------------------------
# valid frames


@pytest.mark.parametrize("kind", sorted(hostile.VALID))
@pytest.mark.parametrize("channels", [1, 3])
def test_unusual_valid_frame_decodes_to_what_a_viewer_shows(kind: str, channels: int) -> None:
    frame = hostile.VALID[kind]()
    assert frame.pixels is not None
    shown = Image.fromarray(frame.pixels)
    height, width = min(frame.pixels.shape[0], 96), min(frame.pixels.shape[1], 128)
    spec = _spec(height, width, channels)
    if shown.size != (width, height):
        shown = shown.resize((width, height), Image.Resampling.BILINEAR)
    expected = np.asarray(shown.convert(spec.mode)).reshape(spec.shape).astype(np.int16)

    got = decode_one(frame.data, spec)

    assert got.dtype == np.uint8 and got.shape == spec.shape and got.flags.c_contiguous
    diff = np.abs(got.astype(np.int16) - expected)
    if frame.lossy:
        assert diff.mean() < 4.0, f"{kind}: mean abs diff {diff.mean():.2f}"
    else:
        assert diff.max() <= 1, f"{kind}: max abs diff {diff.max()}"


def test_exif_orientation_really_rotates() -> None:
    frame = hostile.png_exif_rotated()  # stored 64 wide x 48 tall, orientation 6
    got = decode_one(frame.data, _spec(64, 48, 3))  # shown 48 wide x 64 tall
    stored = hostile.picture()
    assert np.array_equal(got, np.rot90(stored, k=-1))
    # the blue block of the stored top-left corner is now in the top-right corner
    assert got[:8, -8:, 2].min() == 250 and got[:8, :8, 2].max() < 250


def test_png_gray16_keeps_the_top_8_bits_exactly() -> None:
    frame = hostile.png_gray16()
    got = decode_one(frame.data, _spec(48, 64, 1))
    assert np.array_equal(got[..., 0], frame.pixels[..., 0])


def test_transparency_is_composited_on_black() -> None:
    got = decode_one(hostile.png_rgba().data, _spec(48, 64, 3))
    assert got[:, 32:].max() == 0  # the fully transparent right half


def test_gif_gives_its_first_frame_only() -> None:
    got = decode_one(hostile.gif_animated().data, _spec(48, 64, 1))
    assert got.mean() < 200  # the second frame is all white


def test_fashion_png_decodes_to_exactly_the_original_pixels(fashion_png) -> None:
    frames, originals = fashion_png
    batch = decode_batch(pa.array(frames, pa.binary()), FASHION)
    assert batch.images.shape == (64, 28, 28, 1) and batch.images.flags.c_contiguous
    assert np.array_equal(batch.images[..., 0], originals)
    assert batch.ok_index.tolist() == list(range(64)) and batch.bad_index.size == 0


def test_large_jpeg_is_drafted_and_resized_to_the_target() -> None:
    frame = hostile.jpeg_large()  # 1024x768 RGB
    got = decode_one(frame.data, FASHION)
    assert got.shape == (28, 28, 1)
    expected = np.asarray(Image.fromarray(frame.pixels).convert("L").resize((28, 28)))
    assert np.abs(got[..., 0].astype(int) - expected).mean() < 4


# ---------------------------------------------------------------------------------------------
# hostile frames


@pytest.mark.parametrize("kind", sorted(hostile.BAD))
def test_hostile_frame_gets_its_precise_reason(kind: str) -> None:
    frame = hostile.over_size(4096) if kind == "over_size" else hostile.BAD[kind]()
    limits = FrameLimits(max_bytes=4096) if kind == "over_size" else FrameLimits()
    with pytest.raises(FrameRejected) as caught:
        decode_one(frame.data, FASHION, limits)
    assert caught.value.reason is frame.expect, caught.value.detail
    assert caught.value.detail


def test_default_over_size_frame_is_too_large_for_the_default_limit() -> None:
    frame = hostile.over_size()
    assert len(frame.data) == FrameLimits().max_bytes + 1
    with pytest.raises(FrameRejected, match="too_large"):
        decode_one(frame.data, FASHION, FrameLimits())


def test_bomb_details_name_the_declared_size_and_the_setting() -> None:
    with pytest.raises(FrameRejected) as caught:
        decode_one(hostile.png_bomb_header().data, FASHION)
    assert "100000x100000" in caught.value.detail
    assert "FRAMESTREAM_LIMITS_MAX_PIXELS" in caught.value.detail
    assert Image.MAX_IMAGE_PIXELS is None  # FrameLimits, not Pillow, guards the size


def test_limits_are_settings_and_apply(fashion_png) -> None:
    frame = fashion_png[0][0]
    with pytest.raises(FrameRejected, match="too_many_pixels"):
        decode_one(frame, FASHION, FrameLimits(max_pixels=28 * 28 - 1))
    with pytest.raises(FrameRejected, match="bad_dimensions"):
        decode_one(frame, FASHION, FrameLimits(max_side=27))
    with pytest.raises(FrameRejected, match="unsupported_format"):
        decode_one(frame, FASHION, FrameLimits(formats=("JPEG",)))
    limits = FrameLimits.load(env={"FRAMESTREAM_LIMITS_FORMATS": "jpeg, png",
                                   "FRAMESTREAM_LIMITS_MAX_ASPECT": "4"})
    assert limits.formats == ("JPEG", "PNG") and limits.max_aspect == 4.0
    with pytest.raises(FrameRejected, match="aspect 5 > max_aspect 4"):
        limits.check_declared(500, 100)
    with pytest.raises(FrameRejected, match="zero side"):
        limits.check_declared(0, 100)


@pytest.mark.parametrize(("env", "setting"), [
    ({"FRAMESTREAM_LIMITS_FORMATS": "JPEG,EPS"}, "FRAMESTREAM_LIMITS_FORMATS"),
    ({"FRAMESTREAM_LIMITS_MAX_PIXELS": "0"}, "FRAMESTREAM_LIMITS_MAX_PIXELS"),
    ({"FRAMESTREAM_LIMITS_MAX_ASPECT": "0.5"}, "FRAMESTREAM_LIMITS_MAX_ASPECT"),
    ({"FRAMESTREAM_LIMITS_MAX_BYTES": "ten"}, "FRAMESTREAM_LIMITS_MAX_BYTES"),
])
def test_bad_limit_names_the_setting(env: dict[str, str], setting: str) -> None:
    with pytest.raises(ConfigError, match=setting):
        FrameLimits.load(env=env)


def test_sniff_format_knows_refused_formats_from_garbage() -> None:
    assert sniff_format(hostile.unsupported_format().data) == "PPM"
    assert sniff_format(hostile.webp_lossy().data) == "WEBP"
    assert sniff_format(hostile.random_bytes().data) is None
    assert sniff_format(b"") is None


# ---------------------------------------------------------------------------------------------
# batches


def _mixed(fashion_png) -> tuple[list[bytes | None], dict[int, Reason]]:
    frames, _ = fashion_png
    values: list[bytes | None] = list(frames[:6])
    bad = {1: Reason.EMPTY, 3: Reason.TOO_MANY_PIXELS, 4: Reason.TRUNCATED}
    values[1] = None
    values[3] = hostile.png_bomb_header().data
    values[4] = hostile.truncated_png().data
    return values, bad


def _check_mixed(batch: DecodedBatch, fashion_png, bad: dict[int, Reason]) -> None:
    good = [i for i in range(6) if i not in bad]
    assert batch.ok_index.dtype == np.int64 and batch.bad_index.dtype == np.int64
    assert batch.ok_index.tolist() == good
    assert batch.bad_index.tolist() == sorted(bad)
    assert batch.reasons == [bad[i].value for i in sorted(bad)]
    assert len(batch.details) == len(bad) and len(batch) == 6
    assert batch.images.flags.c_contiguous
    assert np.array_equal(batch.images[..., 0], fashion_png[1][good])


@pytest.mark.parametrize("column", ["list", "binary", "large_binary", "chunked", "sliced",
                                    "numpy", "string_view"])
def test_batch_keeps_rows_straight_for_every_column_type(fashion_png, column: str) -> None:
    values, bad = _mixed(fashion_png)
    if column == "list":
        data: object = values
    elif column == "binary":
        data = pa.array(values, pa.binary())
    elif column == "large_binary":
        data = pa.array(values, pa.large_binary())
    elif column == "chunked":
        data = pa.chunked_array([pa.array(values[:2], pa.binary()),
                                 pa.array(values[2:], pa.binary())])
    elif column == "sliced":  # an Arrow slice has a non-zero offset into its buffers
        data = pa.array([b"junk", *values], pa.binary()).slice(1)
    elif column == "numpy":
        data = np.array(values, dtype=object)
    else:
        data = pa.array(values, pa.binary_view())
    _check_mixed(decode_batch(data, FASHION), fashion_png, bad)


def test_batch_decodes_into_a_given_buffer(fashion_png) -> None:
    values, bad = _mixed(fashion_png)
    buffer = np.zeros((8, 28, 28, 1), np.uint8)
    batch = decode_batch(values, FASHION, out=buffer)
    assert np.shares_memory(batch.images, buffer)
    _check_mixed(batch, fashion_png, bad)
    with pytest.raises(ValueError, match="out must be"):
        decode_batch(values, FASHION, out=np.zeros((3, 28, 28, 1), np.uint8))


def test_batch_of_non_bytes_values_rejects_rather_than_raises() -> None:
    batch = decode_batch([42, "text", float("nan"), b""], FASHION)
    assert batch.bad_index.tolist() == [0, 1, 2, 3]
    assert batch.reasons == ["undecodable", "undecodable", "empty", "empty"]
    assert batch.images.shape == (0, 28, 28, 1)


def test_empty_batch() -> None:
    batch = decode_batch(pa.array([], pa.binary()), FASHION)
    assert batch.images.shape == (0, 28, 28, 1) and len(batch) == 0


def test_non_binary_arrow_column_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="binary column"):
        decode_batch(pa.array([1, 2]), FASHION)
