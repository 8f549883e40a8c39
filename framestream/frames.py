"""The Kafka frame record, shared by the producer, the stream and the benchmarks.

One record per frame on the ``frames`` topic::

    key      source id, UTF-8 (e.g. ``cam-3``): one camera -> one partition -> in order
    value    the encoded image, as the camera sent it (JPEG, PNG, WebP, ...)
    headers  fs-frame-id     unique id of this frame (UTF-8)
             fs-capture-ts   capture time, float UNIX seconds as ASCII ("1767000000.123456")
             fs-format       "png" / "jpeg" / ... as the producer encoded it (a hint, never trusted)
             fs-label        true class index as ASCII, when known (accuracy checks)
             fs-sample       where the image came from ("fashion-mnist:test:123", a file name)
             fs-corrupt      hostile frames only: what kind of broken it is ("truncated_png")
             fs-expect       hostile frames only: the DLQ reason it must get ("truncated")

kafka-python gives headers as ``[(str, bytes), ...]``; Spark's Kafka source (``includeHeaders``)
gives a column ``array<struct<key: string, value: binary>>``: :func:`parse_headers` reads one row
of either, :func:`header_values` / :func:`header_numbers` read a whole Arrow column at once.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

FRAME_ID_HEADER = "fs-frame-id"
CAPTURE_TS_HEADER = "fs-capture-ts"
FORMAT_HEADER = "fs-format"
LABEL_HEADER = "fs-label"
SAMPLE_HEADER = "fs-sample"
CORRUPT_HEADER = "fs-corrupt"
EXPECT_HEADER = "fs-expect"

#: --format names -> Pillow format names, for :func:`encode_image`.
ENCODINGS = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP", "bmp": "BMP"}


@dataclass(frozen=True)
class Frame:
    """One frame record. ``extra`` holds any further headers, in order."""

    key: str
    value: bytes
    frame_id: str
    capture_ts: float
    fmt: str | None = None
    label: int | None = None
    sample: str | None = None
    extra: tuple[tuple[str, bytes], ...] = ()

    def headers(self) -> list[tuple[str, bytes]]:
        """The Kafka headers of this frame, as kafka-python's ``send(headers=...)`` takes them."""
        out = [(FRAME_ID_HEADER, self.frame_id.encode()),
               (CAPTURE_TS_HEADER, format_ts(self.capture_ts))]
        if self.fmt is not None:
            out.append((FORMAT_HEADER, self.fmt.encode("ascii")))
        if self.label is not None:
            out.append((LABEL_HEADER, str(int(self.label)).encode("ascii")))
        if self.sample is not None:
            out.append((SAMPLE_HEADER, self.sample.encode()))
        out.extend(self.extra)
        return out

    @classmethod
    def from_record(cls, key: bytes | str | None, value: bytes | None, headers: Any) -> "Frame":
        """The Frame of a consumed record (kafka-python ``ConsumerRecord`` fields or a Spark row).

        Missing headers become None / NaN; unknown ones are kept in ``extra``.
        """
        h = parse_headers(headers)
        known = {FRAME_ID_HEADER, CAPTURE_TS_HEADER, FORMAT_HEADER, LABEL_HEADER, SAMPLE_HEADER}
        return cls(
            key=(key.decode("utf-8", "replace") if isinstance(key, (bytes, bytearray))
                 else (key or "")),
            value=bytes(value or b""),
            frame_id=h[FRAME_ID_HEADER].decode("utf-8", "replace") if FRAME_ID_HEADER in h else "",
            capture_ts=_float(h.get(CAPTURE_TS_HEADER)),
            fmt=h[FORMAT_HEADER].decode("ascii", "replace") if FORMAT_HEADER in h else None,
            label=_int(h.get(LABEL_HEADER)),
            sample=h[SAMPLE_HEADER].decode("utf-8", "replace") if SAMPLE_HEADER in h else None,
            extra=tuple((k, v) for k, v in h.items() if k not in known),
        )


def format_ts(ts: float) -> bytes:
    """A capture time as the ASCII header value (microseconds)."""
    return f"{ts:.6f}".encode("ascii")


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _float(raw: bytes | None) -> float:
    try:
        return float(raw.decode("ascii")) if raw is not None else math.nan
    except (ValueError, UnicodeDecodeError):
        return math.nan


def _int(raw: bytes | None) -> int | None:
    """An ASCII integer header, or None when missing, not an integer, or outside int64 (a
    hostile ``fs-label: 99999999999999999999`` is no label, not an OverflowError)."""
    try:
        value = int(raw.decode("ascii")) if raw is not None else None
    except (ValueError, UnicodeDecodeError):
        return None
    return value if value is None or INT64_MIN <= value <= INT64_MAX else None


parse_int = _int  # public name, for the prediction's "label"


def finite_float(raw: bytes | None) -> float | None:
    """An ASCII float header as strict JSON can carry it: None when missing, not a number, or
    not finite ("nan", "inf", "1e999")."""
    value = _float(raw)
    return value if math.isfinite(value) else None


def encode_image(array: np.ndarray, fmt: str = "jpeg", quality: int = 90) -> bytes:
    """Encode a uint8 ``HxW`` (gray), ``HxWx1``, ``HxWx3`` (RGB) or ``HxWx4`` (RGBA) image.

    ``fmt``: jpeg, png (lossless), webp (lossless at quality 100) or bmp. ``quality`` applies to
    jpeg and webp.
    """
    from PIL import Image

    try:
        pil_format = ENCODINGS[fmt.lower()]
    except KeyError:
        raise ValueError(f"unknown image format {fmt!r}; one of {sorted(ENCODINGS)}") from None
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"encode_image needs uint8 pixels, got {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise ValueError(f"encode_image needs HxW, HxWx1, HxWx3 or HxWx4, got {array.shape}")
    image = Image.fromarray(array)
    if pil_format in ("JPEG", "BMP") and image.mode == "RGBA":
        image = image.convert("RGB")  # neither stores alpha
    params: dict[str, Any] = {}
    if pil_format == "JPEG":
        params["quality"] = quality
    elif pil_format == "WEBP":
        params = {"quality": quality, "lossless": quality >= 100}
    buf = io.BytesIO()
    image.save(buf, pil_format, **params)
    return buf.getvalue()


def parse_headers(headers: Any) -> dict[str, bytes]:
    """One record's headers as ``{name: value}`` (the last one wins when a name repeats).

    Accepts kafka-python's ``[(str, bytes), ...]``, Spark rows of ``(key, value)`` (``Row`` is a
    tuple), ``[{"key": ..., "value": ...}, ...]`` (Arrow ``to_pylist``), a mapping, or None.
    """
    if headers is None:
        return {}
    if isinstance(headers, Mapping):
        items: Iterable[Any] = headers.items()
    else:
        items = headers
    out: dict[str, bytes] = {}
    for item in items:
        if isinstance(item, Mapping):
            key, value = item.get("key"), item.get("value")
        else:
            key, value = item
        if key is None:
            continue
        if isinstance(key, (bytes, bytearray)):
            key = key.decode("utf-8", "replace")
        out[str(key)] = bytes(value) if value is not None else b""
    return out


def header_values(headers: Any, name: str) -> Any:
    """The value of header ``name`` on every row of an Arrow ``list<struct<key, value>>`` column,
    as a binary Arrow array (null where a row lacks it; the last one wins when repeated).

    Vectorised: no Python object per row. ``headers`` may be a ``ChunkedArray``.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(headers, pa.ChunkedArray):
        headers = headers.combine_chunks() if headers.num_chunks else pa.array(
            [], headers.type)
    n = len(headers)
    flat = headers.flatten()  # the struct rows of all lists, honouring slices and null lists
    if len(flat) == 0:
        return pa.nulls(n, pa.binary())
    parents = pc.list_parent_indices(headers).to_numpy()
    hit = pc.fill_null(pc.equal(flat.field("key"), name), False)
    hit_idx = np.flatnonzero(hit.to_numpy(zero_copy_only=False))
    values = flat.field("value")
    if not pa.types.is_binary(values.type):
        values = values.cast(pa.binary())
    position = np.full(n, -1, dtype=np.int64)
    position[parents[hit_idx]] = hit_idx  # fancy assignment: the last duplicate index wins
    return values.take(pa.array(position, mask=position < 0))


def header_numbers(headers: Any, name: str, dtype: Any = np.float64) -> np.ndarray:
    """:func:`header_values` parsed as ASCII numbers into a numpy array: NaN (floats) or -1
    (ints) where the header is missing or not a number."""
    import pyarrow as pa
    import pyarrow.compute as pc

    raw = header_values(headers, name)
    is_float = np.issubdtype(np.dtype(dtype), np.floating)
    missing = math.nan if is_float else -1
    try:
        parsed = pc.cast(raw.cast(pa.string()), pa.float64() if is_float else pa.int64())
        return np.asarray(pc.fill_null(parsed, missing).to_numpy(zero_copy_only=False), dtype)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # some value is not a number: parse one by one
        parse = _float if is_float else _int
        out = [parse(v) for v in raw.to_pylist()]
        return np.asarray([missing if v is None else v for v in out], dtype=dtype)
