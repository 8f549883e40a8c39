"""Hostile and unusual frames, built in memory: what cameras, bugs and attackers send.

Two catalogues, each ``kind -> zero-argument generator``:

- :data:`BAD`: frames the ETL must reject, each with the exact :class:`~framestream.records.Reason`
  (``Hostile.expect``) that the DLQ must show.
- :data:`VALID`: unusual but legitimate frames that must classify, each with ``pixels``: the
  RGB image a viewer would show (EXIF rotation applied, transparency composited on black), for
  comparing what the ETL decodes.

Used by the decode unit tests, by ``python -m jobs.produce --corrupt K`` and by chaos tests.
Everything is deterministic and cached (the deflate bomb takes a moment to compress).
"""

from __future__ import annotations

import io
import random
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

from framestream.records import DEFAULT_MAX_FRAME_BYTES, Reason

#: Bigger frames than this do not fit a Kafka record with the broker's default limits (1 MiB).
KAFKA_SAFE_BYTES = 900_000


@dataclass(frozen=True)
class Hostile:
    kind: str
    data: bytes
    expect: Reason | None = None      # the rejection reason; None: the frame must decode
    pixels: np.ndarray | None = None  # VALID only: uint8 HxWx3, what a viewer shows
    lossy: bool = False               # VALID only: compare with a tolerance


# ---------------------------------------------------------------------------------------------
# building blocks


def picture(width: int = 64, height: int = 48) -> np.ndarray:
    """A smooth, asymmetric RGB test picture (uint8 HxWx3): red grows left->right, green
    top->bottom, a bright blue block sits in the top-left corner, so any rotation or flip shows."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1),
                    np.full_like(x, 40)], axis=-1).astype(np.uint8)
    rgb[: height // 4, : width // 4, 2] = 250
    return rgb


def encode(array: np.ndarray | Image.Image, fmt: str, **params: object) -> bytes:
    image = array if isinstance(array, Image.Image) else Image.fromarray(array)
    buf = io.BytesIO()
    image.save(buf, fmt, **params)
    return buf.getvalue()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_from_header(width: int, height: int, idat: bytes, bit_depth: int = 8,
                    color_type: int = 0) -> bytes:
    """A PNG with any declared size around the given (already deflated) IDAT payload."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat)
            + _chunk(b"IEND", b""))


def _gray(rgb: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(rgb).convert("L"))


# ---------------------------------------------------------------------------------------------
# frames that must be rejected


def empty() -> Hostile:
    return Hostile("empty", b"", Reason.EMPTY)


def truncated_jpeg() -> Hostile:
    data = encode(picture(), "JPEG", quality=90)
    return Hostile("truncated_jpeg", data[: len(data) // 2], Reason.TRUNCATED)


def truncated_png() -> Hostile:
    noise = np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    data = encode(noise, "PNG")  # noise: the IDAT is most of the file, so half lands inside it
    return Hostile("truncated_png", data[: len(data) // 2], Reason.TRUNCATED)


def truncated_webp() -> Hostile:
    data = encode(picture(), "WEBP", quality=80)
    return Hostile("truncated_webp", data[: len(data) // 2], Reason.TRUNCATED)


def random_bytes() -> Hostile:
    data = b"\x01" + random.Random(7).randbytes(2047)  # \x01: no image format starts so
    return Hostile("random_bytes", data, Reason.UNDECODABLE)


def wrong_magic() -> Hostile:
    data = encode(picture(), "PNG")
    return Hostile("wrong_magic", b"\x89PNX\r\n\x1a\n" + data[8:], Reason.UNDECODABLE)


def corrupt_png_data() -> Hostile:
    """Valid chunk structure and CRCs, but the deflate stream inside IDAT is garbage."""
    raw = b"".join(b"\x00" + bytes(range(64)) for _ in range(48))
    idat = bytearray(zlib.compress(raw))
    idat[2:12] = b"\xff" * 10
    return Hostile("corrupt_png_data", png_from_header(64, 48, bytes(idat)), Reason.UNDECODABLE)


def zero_width_png() -> Hostile:
    # Pillow itself refuses a zero-sized PNG header, so this never reaches FrameLimits.
    return Hostile("zero_width_png", png_from_header(0, 48, zlib.compress(b"")), Reason.UNDECODABLE)


def png_bomb_header() -> Hostile:
    """A 100 000 x 100 000 PNG (1e10 pixels) declared in a 60-byte file."""
    return Hostile("png_bomb_header", png_from_header(100_000, 100_000, zlib.compress(b"\0" * 64)),
                   Reason.TOO_MANY_PIXELS)


def gif_bomb_header() -> Hostile:
    """A GIF whose logical screen and first frame declare 65535 x 65535."""
    data = (b"GIF89a" + struct.pack("<HHBBB", 65535, 65535, 0, 0, 0)
            + b"," + struct.pack("<HHHHB", 0, 0, 65535, 65535, 0) + b"\x02\x02\x4c\x01\x00;")
    return Hostile("gif_bomb_header", data, Reason.TOO_MANY_PIXELS)


def jpeg_bomb_header() -> Hostile:
    """A real small JPEG whose SOF marker is patched to declare 65500 x 65500."""
    data = bytearray(encode(picture(), "JPEG", quality=90))
    sof = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, 65500, 65500)  # marker(2) len(2) precision(1) H W
    return Hostile("jpeg_bomb_header", bytes(data), Reason.TOO_MANY_PIXELS)


@lru_cache(maxsize=1)
def _deflate_bomb() -> bytes:
    side = 10_000
    row = b"\x00" * (side + 1)  # filter byte + 10 000 black pixels
    z = zlib.compressobj(9)
    body = b"".join(z.compress(row * 500) for _ in range(side // 500)) + z.flush()
    return png_from_header(side, side, body)


def png_bomb_deflate() -> Hostile:
    """A real, fully valid 10 000 x 10 000 black PNG: ~100 KB that inflate to 100 MB."""
    return Hostile("png_bomb_deflate", _deflate_bomb(), Reason.TOO_MANY_PIXELS)


def over_size(max_bytes: int | None = None) -> Hostile:
    """A valid JPEG padded to one byte over ``max_bytes`` (default: the default limit)."""
    limit = DEFAULT_MAX_FRAME_BYTES if max_bytes is None else max_bytes
    data = encode(picture(), "JPEG", quality=90)
    return Hostile("over_size", data + b"\0" * max(0, limit + 1 - len(data)), Reason.TOO_LARGE)


def absurd_aspect() -> Hostile:
    """2000 x 1: every side within limits, aspect 2000."""
    return Hostile("absurd_aspect", encode(np.zeros((1, 2000), np.uint8), "PNG"),
                   Reason.BAD_DIMENSIONS)


def too_long_side() -> Hostile:
    """17 000 x 400: aspect 42.5 and 6.8 M pixels are fine, the side is not (> 16384)."""
    return Hostile("too_long_side", encode(np.zeros((400, 17_000), np.uint8), "PNG"),
                   Reason.BAD_DIMENSIONS)


def unsupported_format() -> Hostile:
    """A perfectly good PPM: a real image in a format the default limits do not accept."""
    return Hostile("unsupported_format", encode(picture(), "PPM"), Reason.UNSUPPORTED_FORMAT)


def float_tiff() -> Hostile:
    return Hostile("float_tiff", encode(np.zeros((48, 64), np.float32), "TIFF"),
                   Reason.UNSUPPORTED_MODE)


BAD: dict[str, Callable[[], Hostile]] = {f.__name__: f for f in (
    empty, truncated_jpeg, truncated_png, truncated_webp, random_bytes, wrong_magic,
    corrupt_png_data, zero_width_png, png_bomb_header, gif_bomb_header, jpeg_bomb_header,
    png_bomb_deflate, over_size, absurd_aspect, too_long_side, unsupported_format, float_tiff)}


def hostile_mix(count: int, seed: int = 0, max_bytes: int = KAFKA_SAFE_BYTES) -> list[Hostile]:
    """``count`` bad frames cycling through every BAD kind that fits ``max_bytes`` (shuffled by
    ``seed``, each kind used before any repeats)."""
    kinds = [k for k in BAD if len(BAD[k]().data) <= max_bytes]
    random.Random(seed).shuffle(kinds)
    return [BAD[kinds[i % len(kinds)]]() for i in range(count)]


# ---------------------------------------------------------------------------------------------
# unusual frames that must decode


def _valid(kind: str, data: bytes, pixels: np.ndarray, lossy: bool = False) -> Hostile:
    return Hostile(kind, data, None, pixels, lossy)


def jpeg_baseline() -> Hostile:
    return _valid("jpeg_baseline", encode(picture(), "JPEG", quality=95), picture(), lossy=True)


def jpeg_progressive() -> Hostile:
    data = encode(picture(), "JPEG", quality=95, progressive=True)
    return _valid("jpeg_progressive", data, picture(), lossy=True)


def jpeg_cmyk() -> Hostile:
    data = encode(Image.fromarray(picture()).convert("CMYK"), "JPEG", quality=95)
    return _valid("jpeg_cmyk", data, picture(), lossy=True)


def jpeg_gray() -> Hostile:
    gray = _gray(picture())
    return _valid("jpeg_gray", encode(gray, "JPEG", quality=95), np.stack([gray] * 3, -1),
                  lossy=True)


def jpeg_large() -> Hostile:
    """1024 x 768: big enough that a small target makes libjpeg decode at 1/8 scale (draft)."""
    big = picture(1024, 768)
    return _valid("jpeg_large", encode(big, "JPEG", quality=90), big, lossy=True)


def _exif_rotated(fmt: str, lossy: bool, **params: object) -> Hostile:
    """Stored 64x48 with EXIF orientation 6: a viewer rotates it 90 degrees clockwise (48x64)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(picture(), fmt, exif=exif, **params)
    shown = np.ascontiguousarray(np.rot90(picture(), k=-1))  # 90 degrees clockwise
    return _valid(f"{fmt.lower()}_exif_rotated", data, shown, lossy)


def jpeg_exif_rotated() -> Hostile:
    return _exif_rotated("JPEG", True, quality=95)


def png_exif_rotated() -> Hostile:
    return _exif_rotated("PNG", False)


def png_rgb() -> Hostile:
    return _valid("png_rgb", encode(picture(), "PNG"), picture())


def png_gray8() -> Hostile:
    gray = _gray(picture())
    return _valid("png_gray8", encode(gray, "PNG"), np.stack([gray] * 3, -1))


def png_gray16() -> Hostile:
    """16-bit grayscale holding v * 257 of an 8-bit image: must decode to exactly v."""
    gray = _gray(picture())
    data = encode(Image.fromarray(gray.astype(np.uint16) * 257), "PNG")
    return _valid("png_gray16", data, np.stack([gray] * 3, -1))


def png_palette() -> Hostile:
    image = Image.fromarray(picture()).quantize(64)
    return _valid("png_palette", encode(image, "PNG"), np.asarray(image.convert("RGB")))


def _alpha_mask(height: int = 48, width: int = 64) -> np.ndarray:
    alpha = np.full((height, width), 255, np.uint8)
    alpha[:, width // 2:] = 0        # right half fully transparent
    alpha[height // 2:, : width // 4] = 128  # a half-transparent block
    return alpha


def _on_black(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    return ((rgb.astype(np.uint32) * alpha[..., None] + 127) // 255).astype(np.uint8)


def png_rgba() -> Hostile:
    rgba = np.dstack([picture(), _alpha_mask()])
    return _valid("png_rgba", encode(rgba, "PNG"), _on_black(picture(), _alpha_mask()))


def png_la() -> Hostile:
    gray = _gray(picture())
    data = encode(Image.fromarray(np.dstack([gray, _alpha_mask()]), "LA"), "PNG")
    shown = _on_black(np.stack([gray] * 3, -1), _alpha_mask())
    return _valid("png_la", data, shown)


def png_palette_transparent() -> Hostile:
    """A palette PNG whose colour 0 is transparent (tRNS): those pixels show black."""
    image = Image.fromarray(picture()).quantize(64)
    index = np.asarray(image)
    data = encode(image, "PNG", transparency=0)
    shown = np.asarray(image.convert("RGB")).copy()
    shown[index == 0] = 0
    return _valid("png_palette_transparent", data, shown)


def webp_lossy() -> Hostile:
    return _valid("webp_lossy", encode(picture(), "WEBP", quality=95), picture(), lossy=True)


def webp_lossless_alpha() -> Hostile:
    rgba = np.dstack([picture(), _alpha_mask()])
    data = encode(rgba, "WEBP", lossless=True)
    return _valid("webp_lossless_alpha", data, _on_black(picture(), _alpha_mask()))


def gif_animated() -> Hostile:
    """Two frames, the first the picture, the second white: only the first may come back."""
    first = Image.fromarray(picture()).quantize(128)
    second = Image.new("RGB", (64, 48), (255, 255, 255)).quantize(2)
    buf = io.BytesIO()
    first.save(buf, "GIF", save_all=True, append_images=[second], duration=100, loop=0)
    return _valid("gif_animated", buf.getvalue(), np.asarray(first.convert("RGB")))


def bmp_rgb() -> Hostile:
    return _valid("bmp_rgb", encode(picture(), "BMP"), picture())


def tiff_rgb() -> Hostile:
    return _valid("tiff_rgb", encode(picture(), "TIFF"), picture())


def tiff_lzw_gray() -> Hostile:
    gray = _gray(picture())
    data = encode(gray, "TIFF", compression="tiff_lzw")
    return _valid("tiff_lzw_gray", data, np.stack([gray] * 3, -1))


VALID: dict[str, Callable[[], Hostile]] = {f.__name__: f for f in (
    jpeg_baseline, jpeg_progressive, jpeg_cmyk, jpeg_gray, jpeg_large, jpeg_exif_rotated,
    png_exif_rotated, png_rgb, png_gray8, png_gray16, png_palette, png_rgba, png_la,
    png_palette_transparent, webp_lossy, webp_lossless_alpha, gif_animated, bmp_rgb, tiff_rgb,
    tiff_lzw_gray)}
