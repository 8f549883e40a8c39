"""Decode, validate and resize encoded frames into one uint8 NHWC array (runs on Spark executors).

Input is a column of encoded images: a pyarrow ``BinaryArray``/``LargeBinaryArray`` (or a chunked
one) from ``mapInArrow``, or any sequence of ``bytes | None`` (pandas Series, lists in tests).
Output is one preallocated ``uint8 [n_ok, H, W, C]`` array plus the row indexes of the good and the
rejected frames. The only Python objects per row are the ones Pillow needs to read one image.

Per frame, in order (the first failing step names the :class:`Reason`):

1. ``None`` or zero bytes -> ``EMPTY``; more than ``max_bytes`` -> ``TOO_LARGE``.
2. Pillow opens the header lazily, trying only the plugins of ``limits.formats`` (so a refused
   format's decoder never runs). Nothing identified: magic bytes of a known but refused format
   -> ``UNSUPPORTED_FORMAT``, anything else -> ``UNDECODABLE``.
3. The *declared* size is checked before a single pixel is decoded: ``TOO_MANY_PIXELS`` or
   ``BAD_DIMENSIONS`` (zero side, side over ``max_side``, aspect over ``max_aspect``). This is
   what stops decompression bombs, so Pillow's own ``MAX_IMAGE_PIXELS`` check is switched off
   in any process that imports this module (see below).
4. JPEG: ``Image.draft`` lets libjpeg decode at 1/2, 1/4 or 1/8 scale when the target is that
   much smaller, and straight to grayscale when the target is ``L``.
5. Load. Data that ends early -> ``TRUNCATED`` (``ImageFile.LOAD_TRUNCATED_IMAGES`` stays off:
   a half-grey frame is not a frame). Any other Pillow error -> ``UNDECODABLE`` with its text.
   Steps 2-8 of one frame run under ``decode_timeout_s`` of CPU time (:mod:`etl.time_limit`):
   a frame still decoding then -> ``TIMEOUT``.
6. EXIF orientation is applied (``ImageOps.exif_transpose``); multi-frame files (GIF, APNG,
   WebP, TIFF) give their first frame.
7. Conversion to the spec's mode (``L`` or ``RGB``):
   - transparency (alpha, PNG ``tRNS``, GIF/palette transparency) is composited on **black**:
     Fashion-MNIST-style models are trained on black backgrounds, and black is what
     premultiplied alpha means;
   - 16-bit grayscale (``I;16*``) keeps its top 8 bits (``v >> 8``), so a 16-bit copy of an
     8-bit image (``v * 257``) decodes to exactly the 8-bit pixels; 32-bit ``I`` is clipped to
     0..65535 first; float (``F``) images are rejected (``UNSUPPORTED_MODE``): no agreed range;
   - palette, CMYK, YCbCr, LAB, HSV, 1-bit: Pillow's conversion.
8. Resize to ``(spec.width, spec.height)`` with ``spec.resample`` (no resize, so no change at all,
   when the frame is already that size: a lossless 28x28 PNG comes back pixel for pixel).

Only properties of the bytes become rejections. A failure that says something about this machine
at this moment -- ``MemoryError``, an ``OSError`` carrying an errno (``ENOMEM``, ``EMFILE``, ...),
a codec missing from this Pillow build -- is raised, never turned into a dead letter: the Spark
task fails and is retried, so a replay cannot turn a dead letter into a prediction or back
(:func:`is_transient`). Pillow's own errors about the data are ``OSError`` *without* an errno
("image file is truncated", "broken data stream", "decoder error -2") and stay rejections.

Warnings Pillow raises while reading one frame (corrupt EXIF, odd TIFF tags) are captured and
logged at DEBUG, so a frame behaves the same under ``-W error`` as in production. The capture uses
``warnings.catch_warnings``, which is process-global: decode from one thread per process (Spark's
Python workers do).
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from framestream.limits import FrameLimits, FrameRejected
from etl.time_limit import FrameClock, TimeLimitExceeded
from framestream.records import Reason
from models.spec import PreprocessSpec

__all__ = ["DecodedBatch", "FrameLimits", "FrameRejected", "Reason", "decode_batch", "decode_one",
           "is_transient", "sniff_format"]

log = logging.getLogger(__name__)

# FrameLimits checks every frame's declared size before decoding, with limits that are settings.
# Pillow's global check would fire first (inside Image.open) with its own fixed limit, as a warning
# for 89M..179M pixels and an error above, so it is switched off here; FrameLimits replaces it.
Image.MAX_IMAGE_PIXELS = None

_RESAMPLE = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
             "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS,
             "box": Image.Resampling.BOX}
_ORIENTATION_TAG = 0x0112
_ORIENTATION_SOURCES = frozenset({"exif", "Raw profile type exif", "XML:com.adobe.xmp", "xmp"})
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
_CONVERTIBLE = ("1", "L", "P", "PA", "LA", "La", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr",
                "LAB", "HSV", "I", *_SIXTEEN_BIT)

# (offset, magic, format): enough to tell "a real image in a format we refuse" from garbage.
_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\xff\xd8\xff", "JPEG"), (0, b"\x89PNG\r\n\x1a\n", "PNG"), (0, b"GIF87a", "GIF"),
    (0, b"GIF89a", "GIF"), (8, b"WEBP", "WEBP"), (0, b"BM", "BMP"), (0, b"II*\x00", "TIFF"),
    (0, b"MM\x00*", "TIFF"), (0, b"qoif", "QOI"), (4, b"ftypavif", "AVIF"),
    (4, b"ftypavis", "AVIF"), (4, b"ftypheic", "HEIF"), (4, b"ftypmif1", "HEIF"),
    (0, b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG2000"), (0, b"\xffO\xffQ", "JPEG2000"),
    (0, b"8BPS", "PSD"), (0, b"\x00\x00\x01\x00", "ICO"), (0, b"%PDF", "PDF"),
    (0, b"%!PS", "EPS"), (0, b"\xc5\xd0\xd3\xc6", "EPS"),
)


@dataclass
class DecodedBatch:
    """The result of :func:`decode_batch`: good frames packed in input order, bad ones listed."""

    images: np.ndarray  # uint8 [n_ok, spec.height, spec.width, spec.channels], C-contiguous
    ok_index: np.ndarray  # int64 [n_ok]: input row of images[k]
    bad_index: np.ndarray  # int64 [n_bad]: input rows that were rejected, in order
    reasons: list[str] = field(default_factory=list)  # Reason values, one per bad_index entry
    details: list[str] = field(default_factory=list)  # what exactly, one per bad_index entry

    def __len__(self) -> int:
        """Rows in the input (good + bad)."""
        return len(self.ok_index) + len(self.bad_index)


@lru_cache(maxsize=1)
def default_limits() -> FrameLimits:
    """``FrameLimits`` from the environment (``FRAMESTREAM_LIMITS_*``), read once per process."""
    return FrameLimits.load()


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` is about this process at this moment, not about the frame's bytes.

    Out of memory, an ``OSError`` with an errno (only system calls set one: no fds, no memory,
    I/O), or a codec this Pillow build lacks ("decoder jpeg not available"). The same bytes may
    decode on a retry or on another executor, so such a failure must fail the task, not become a
    dead letter. Pillow reports bad data as ``OSError`` without errno, ``SyntaxError``,
    ``ValueError``, ``EOFError``, ...: those are about the bytes.
    """
    if isinstance(exc, MemoryError):
        return True
    if isinstance(exc, OSError):
        if exc.errno is not None:
            return True
        text = str(exc)
        return text.startswith(("decoder ", "encoder ")) and text.endswith("not available")
    return False


def sniff_format(data: bytes | memoryview) -> str | None:
    """The image format named by ``data``'s magic bytes, or None. Pillow format names."""
    head = bytes(data[:16])
    for offset, magic, name in _MAGIC:
        if head[offset:offset + len(magic)] == magic:
            if name == "WEBP" and not head.startswith(b"RIFF"):
                continue
            return name
    if len(head) >= 3 and head[0:1] == b"P" and head[1:2] in b"1234567" and head[2:3] in b" \t\r\n":
        return "PPM"
    return None


def decode_one(data: bytes | bytearray | memoryview | None, spec: PreprocessSpec,
               limits: FrameLimits | None = None, *, out: np.ndarray | None = None,
               clock: FrameClock | None = None) -> np.ndarray:
    """Decode one encoded frame to ``uint8 [spec.height, spec.width, spec.channels]``.

    Writes into ``out`` (C-contiguous uint8 of ``spec.shape``) when given, and returns it.
    Raises :class:`FrameRejected` for every problem with the frame, and only for those;
    ``ValueError`` for a wrong ``out``; a transient failure (:func:`is_transient`) as itself. ``clock``: the batch's :class:`FrameClock` (else one is
    set up for this frame).
    """
    limits = limits or default_limits()
    if clock is None:
        with FrameClock(limits.decode_timeout_s) as own:
            return decode_one(data, spec, limits, out=out, clock=own)
    if out is None:
        out = np.empty(spec.shape, dtype=np.uint8)
    elif out.dtype != np.uint8 or out.shape != spec.shape or not out.flags.c_contiguous:
        raise ValueError(f"out must be C-contiguous uint8 {spec.shape}, got {out.dtype} "
                         f"{out.shape} contiguous={out.flags.c_contiguous}")
    if data is None or len(data) == 0:
        raise FrameRejected(Reason.EMPTY, "no bytes" if data is not None else "null value")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise FrameRejected(Reason.UNDECODABLE, f"value is {type(data).__name__}, not bytes")
    size = data.nbytes if isinstance(data, memoryview) else len(data)
    if size > limits.max_bytes:
        raise FrameRejected(Reason.TOO_LARGE, f"{size} bytes > max_bytes {limits.max_bytes} "
                                              f"(FRAMESTREAM_LIMITS_MAX_BYTES)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            clock.arm()
            try:
                image = _read(data, spec, limits)
                pixels = image.tobytes()
            finally:
                clock.disarm()
        except FrameRejected:
            raise
        except TimeLimitExceeded:
            raise FrameRejected(Reason.TIMEOUT, f"still decoding after decode_timeout_s "
                                f"{limits.decode_timeout_s:g} CPU seconds "
                                f"(FRAMESTREAM_LIMITS_DECODE_TIMEOUT_S)") from None
        except Exception as exc:  # Pillow and its codecs raise many kinds about the frame ...
            if is_transient(exc):  # ... but not these: the task fails and is retried
                log.error("decoding a %d-byte frame failed for a reason that is not the frame's "
                          "(the task fails, Spark retries it): %s: %s", size,
                          type(exc).__name__, exc)
                raise
            raise _rejection(exc, data) from exc
        finally:
            for w in caught:
                log.debug("Pillow warned while decoding a frame: %s", w.message)
    out.reshape(-1)[:] = np.frombuffer(pixels, dtype=np.uint8)
    return out


def decode_batch(values: Any, spec: PreprocessSpec, limits: FrameLimits | None = None, *,
                 out: np.ndarray | None = None) -> DecodedBatch:
    """Decode a column of encoded frames; never raises for a bad frame, only lists it.

    Raises only for what is not a frame's fault (:func:`is_transient`), so that Spark retries.
    ``values``: pyarrow ``(Large)BinaryArray`` or ``ChunkedArray`` of one, or a sequence of
    ``bytes | None`` (a pandas Series works). ``out``: an optional C-contiguous uint8 array of at
    least ``[len(values), *spec.shape]`` to decode into (e.g. a reusable send buffer); the result's
    ``images`` is then a leading slice of it.
    """
    limits = limits or default_limits()
    n, frames = _frames(values)
    if out is None:
        out = np.empty((n, *spec.shape), dtype=np.uint8)
    elif (out.dtype != np.uint8 or out.ndim != 4 or out.shape[0] < n
          or tuple(out.shape[1:]) != spec.shape or not out.flags.c_contiguous):
        raise ValueError(f"out must be C-contiguous uint8 [>= {n}, *{spec.shape}], got "
                         f"{out.dtype} {list(out.shape)} contiguous={out.flags.c_contiguous}")
    ok_index = np.empty(n, dtype=np.int64)
    bad: list[int] = []
    reasons: list[str] = []
    details: list[str] = []
    with FrameClock(limits.decode_timeout_s) as clock:  # one SIGPROF handler for the batch
        k = _decode_rows(frames, spec, limits, out, clock, ok_index, bad, reasons, details)
    return DecodedBatch(out[:k], ok_index[:k], np.asarray(bad, dtype=np.int64), reasons, details)


def _decode_rows(frames: Iterator[tuple[int, Any]], spec: PreprocessSpec, limits: FrameLimits,
                 out: np.ndarray, clock: FrameClock, ok_index: np.ndarray, bad: list[int],
                 reasons: list[str], details: list[str]) -> int:
    k = 0
    for i, data in frames:
        try:
            decode_one(data, spec, limits, out=out[k], clock=clock)
        except FrameRejected as rejected:
            bad.append(i)
            reasons.append(rejected.reason.value)
            details.append(rejected.detail)
            continue
        except Exception as exc:  # a bug of ours must cost one frame, never the whole batch
            if is_transient(exc):
                raise
            log.exception("decode_one failed unexpectedly on row %d", i)
            bad.append(i)
            reasons.append(Reason.UNDECODABLE.value)
            details.append(f"internal error {type(exc).__name__}: {exc}")
            continue
        ok_index[k] = i
        k += 1
    return k


# ---------------------------------------------------------------------------------------------
# one frame


def _read(data: bytes | bytearray | memoryview, spec: PreprocessSpec,
          limits: FrameLimits) -> Image.Image:
    """Open, check, load, orient, convert, resize one frame (raises FrameRejected or Pillow's)."""
    try:  # only the accepted formats' plugins ever see the bytes
        image = Image.open(io.BytesIO(data), formats=limits.formats)
    except UnidentifiedImageError:
        sniffed = sniff_format(data)
        if sniffed is not None and sniffed not in limits.formats:
            raise FrameRejected(Reason.UNSUPPORTED_FORMAT,
                                f"{sniffed} is not one of the accepted formats "
                                f"{','.join(limits.formats)} (FRAMESTREAM_LIMITS_FORMATS)"
                                ) from None
        what = (f"starts like {sniffed} but its header is unreadable" if sniffed else
                f"not an image in any of {','.join(limits.formats)} "
                f"(first bytes {bytes(data[:8]).hex()})")
        raise FrameRejected(Reason.UNDECODABLE, what) from None
    width, height = image.size
    limits.check_declared(width, height)
    if image.mode not in _CONVERTIBLE:
        raise FrameRejected(Reason.UNSUPPORTED_MODE,
                            f"{image.format} pixels of mode {image.mode} have no agreed mapping "
                            f"to {spec.mode}")
    if image.format == "JPEG":
        side = max(spec.width, spec.height)
        image.draft(spec.mode if spec.mode == "L" else None, (side, side))
    image.load()
    image = _orient(image)
    image = _to_mode(image, spec.mode)
    target = (spec.width, spec.height)
    if image.size != target:
        image = image.resize(target, _RESAMPLE[spec.resample], reducing_gap=3.0)
    return image


def _orient(image: Image.Image) -> Image.Image:
    """Apply EXIF (or XMP) orientation. Unreadable EXIF means no rotation, not a lost frame."""
    if not (_ORIENTATION_SOURCES & image.info.keys() or hasattr(image, "tag_v2")):
        return image  # nothing to read: skip getexif(), a tenth of a small PNG's decode time
    try:
        orientation = image.getexif().get(_ORIENTATION_TAG, 1)
    except Exception as exc:  # corrupt EXIF blocks raise assorted errors; the pixels may be fine
        if is_transient(exc):  # but an unrotated frame for want of memory would be a new answer
            raise
        log.debug("ignoring unreadable EXIF: %s: %s", type(exc).__name__, exc)
        return image
    if orientation in (2, 3, 4, 5, 6, 7, 8):
        return ImageOps.exif_transpose(image)
    return image


def _to_mode(image: Image.Image, mode: str) -> Image.Image:
    """Convert a loaded image to ``mode`` ("L" or "RGB"), compositing transparency on black."""
    src = image.mode
    if src in _SIXTEEN_BIT or src == "I":
        wide = np.asarray(image)
        if src == "I":
            wide = np.clip(wide, 0, 65535)
        gray = Image.fromarray((wide >> 8).astype(np.uint8))
        return gray if mode == "L" else gray.convert(mode)
    if src in ("RGBa", "La", "PA") or (src in ("P", "L", "RGB", "1") and image.info.get(
            "transparency") is not None):
        image, src = image.convert("RGBA"), "RGBA"
    if src in ("RGBA", "LA"):
        background = Image.new(mode, image.size, 0)
        background.paste(image.convert(mode), mask=image.getchannel("A"))
        return background
    if src == mode:
        return image
    try:
        return image.convert(mode)
    except ValueError:  # no direct conversion (e.g. LAB -> L): go through RGB
        return image.convert("RGB").convert(mode)


def _rejection(exc: BaseException, data: bytes | bytearray | memoryview) -> FrameRejected:
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, EOFError) or "truncated" in str(exc).lower():
        return FrameRejected(Reason.TRUNCATED, text)
    if sniff_format(data) == "WEBP":  # libwebp only says "could not create decoder object"
        declared = 8 + int.from_bytes(bytes(data[4:8]), "little")
        if declared > len(data):
            return FrameRejected(Reason.TRUNCATED, f"RIFF declares {declared} bytes, frame has "
                                                   f"{len(data)} ({text})")
    return FrameRejected(Reason.UNDECODABLE, text)


# ---------------------------------------------------------------------------------------------
# columns


def _frames(values: Any) -> tuple[int, Iterator[tuple[int, Any]]]:
    """(row count, iterator of (row, bytes-like | None)) over any supported column type."""
    try:
        import pyarrow as pa
    except ImportError:  # pragma: no cover - pyarrow is a pinned dependency
        pa = None
    if pa is not None and isinstance(values, pa.ChunkedArray):
        return len(values), _chunked_frames(values.chunks)
    if pa is not None and isinstance(values, pa.Array):
        return len(values), _arrow_frames(values, 0)
    if not isinstance(values, Sequence):
        values = list(values) if not hasattr(values, "__len__") else values
    return len(values), _python_frames(values)


def _python_frames(values: Iterable[Any]) -> Iterator[tuple[int, Any]]:
    for i, v in enumerate(values):
        if isinstance(v, float) and v != v:  # pandas' NaN for a missing value
            v = None
        yield i, v


def _chunked_frames(chunks: Iterable[Any]) -> Iterator[tuple[int, Any]]:
    base = 0
    for chunk in chunks:
        yield from _arrow_frames(chunk, base)
        base += len(chunk)


def _arrow_frames(array: Any, base: int) -> Iterator[tuple[int, memoryview | None]]:
    """Zero-copy slices of an Arrow binary column's data buffer, one memoryview per row."""
    import pyarrow as pa

    if pa.types.is_binary(array.type):
        offset_type: Any = np.int32
    elif pa.types.is_large_binary(array.type):
        offset_type = np.int64
    elif (pa.types.is_binary_view(array.type) or pa.types.is_string(array.type)
          or pa.types.is_large_string(array.type) or pa.types.is_string_view(array.type)):
        array, offset_type = array.cast(pa.large_binary()), np.int64
    else:
        raise TypeError(f"decode_batch needs a binary column, got Arrow type {array.type}")
    n = len(array)
    if n == 0:
        return
    _, offsets_buf, data_buf = array.buffers()
    itemsize = np.dtype(offset_type).itemsize
    offsets = np.frombuffer(offsets_buf, dtype=offset_type, count=n + 1,
                            offset=array.offset * itemsize).tolist()
    data = memoryview(data_buf) if data_buf is not None else memoryview(b"")
    valid = (array.is_valid().to_numpy(zero_copy_only=False).tolist() if array.null_count
             else None)
    for j in range(n):
        if valid is not None and not valid[j]:
            yield base + j, None
        else:
            yield base + j, data[offsets[j]:offsets[j + 1]]
