"""What a frame may be before the ETL spends time on it: limits, rejection reasons, the rejection.

Kept apart from :mod:`etl.decode` (which imports Pillow) so that settings tables and tests can
name limits without loading an image library. The reasons themselves are the contract
:class:`framestream.records.Reason`.

Every limit is a setting ``FRAMESTREAM_LIMITS_<NAME>``::

    FRAMESTREAM_LIMITS_MAX_PIXELS=1000000 FRAMESTREAM_LIMITS_FORMATS=JPEG,PNG  python -m ...
"""

from __future__ import annotations

from pydantic import field_validator

from framestream.errors import FramestreamError
from framestream.records import DEFAULT_MAX_FRAME_BYTES, Reason
from framestream.settings import Section, section, setting

#: Raster formats the ETL can be told to accept (Pillow format names). Formats that run external
#: programs (EPS runs Ghostscript) or that are not camera images are not on the list on purpose.
KNOWN_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "PPM", "AVIF",
                                  "JPEG2000", "QOI")
DEFAULT_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")


class FrameRejected(FramestreamError, ValueError):
    """One frame cannot be used. ``reason`` is a :class:`Reason`; ``detail`` says what exactly."""

    def __init__(self, reason: Reason, detail: str) -> None:
        self.reason = Reason(reason)
        self.detail = detail
        super().__init__(self.reason, detail)  # args rebuild the exception (copy, tracebacks)

    def __str__(self) -> str:
        return f"{self.reason.value}: {self.detail}"


def _formats_ok(value: tuple[str, ...]) -> bool:
    return bool(value) and all(f in KNOWN_FORMATS for f in value)


class FrameLimits(Section):
    """Bounds on one encoded frame. All size checks run on the *declared* size, before decoding,
    so a frame costs bounded time and memory whatever its header claims (decompression bombs).

    ``max_pixels`` bounds memory: a frame allocates at most about ``4 * max_pixels`` bytes (RGBA).
    ``decode_timeout_s`` bounds time: a frame still decoding after it is rejected (``timeout``),
    so no frame can hold an executor; 0 turns the clock off.
    """

    model_config = section("limits")

    max_bytes: int = setting(DEFAULT_MAX_FRAME_BYTES, "largest encoded frame accepted, in bytes",
                             ok=lambda v: v >= 1, expected=">= 1")
    max_pixels: int = setting(40_000_000, "most pixels a frame may declare (memory: ~4 bytes each)",
                              ok=lambda v: v >= 1, expected=">= 1")
    max_side: int = setting(16384, "longest side a frame may declare, in pixels",
                            ok=lambda v: 1 <= v <= 65535, expected="1..65535")
    max_aspect: float = setting(50.0, "largest aspect ratio (long side / short side) accepted",
                                ok=lambda v: v >= 1.0, expected=">= 1.0")
    formats: tuple[str, ...] = setting(
        DEFAULT_FORMATS, "image formats accepted (comma list of Pillow format names)",
        ok=_formats_ok, expected=f"a non-empty comma list out of {','.join(KNOWN_FORMATS)}")
    decode_timeout_s: float = setting(10.0, "seconds one frame may take to decode (0 = no limit)",
                                      ok=lambda v: 0 <= v <= 3600,
                                      expected="0 (off) .. 3600 seconds")

    @field_validator("formats", mode="after")
    @classmethod
    def _upper(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        # Accept "jpeg, png" from the environment or a CLI: Pillow's names are upper case.
        return tuple(f.strip().upper() if isinstance(f, str) else f for f in value)

    def check_declared(self, width: int, height: int) -> None:
        """Raise :class:`FrameRejected` if a frame declaring ``width`` x ``height`` is out of
        bounds; detail names the setting to change."""
        if width <= 0 or height <= 0:
            raise FrameRejected(Reason.BAD_DIMENSIONS, f"declared {width}x{height}: a zero side")
        pixels = width * height
        if pixels > self.max_pixels:
            raise FrameRejected(
                Reason.TOO_MANY_PIXELS,
                f"declared {width}x{height} = {pixels:.3g} pixels > max_pixels "
                f"{self.max_pixels:.3g} (FRAMESTREAM_LIMITS_MAX_PIXELS)")
        if max(width, height) > self.max_side:
            raise FrameRejected(
                Reason.BAD_DIMENSIONS,
                f"declared {width}x{height}: side {max(width, height)} > max_side {self.max_side}"
                f" (FRAMESTREAM_LIMITS_MAX_SIDE)")
        aspect = max(width, height) / min(width, height)
        if aspect > self.max_aspect:
            raise FrameRejected(
                Reason.BAD_DIMENSIONS,
                f"declared {width}x{height}: aspect {aspect:.4g} > max_aspect {self.max_aspect:g}"
                f" (FRAMESTREAM_LIMITS_MAX_ASPECT)")
