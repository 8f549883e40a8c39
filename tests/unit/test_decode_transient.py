"""etl.decode: only properties of the bytes become dead letters. A failure of the moment (out of
memory, no file descriptors, a codec missing from this build) fails the batch, so Spark retries the
task and a replay cannot answer a frame differently from the first run."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

from etl.decode import FrameRejected, Reason, decode_batch, decode_one, is_transient
from framestream import hostile
from models.spec import PreprocessSpec

FASHION = PreprocessSpec()
ROOT = Path(__file__).resolve().parents[2]

# A child process decodes one small frame (so every lazy import and buffer exists), caps its
# address space a little above what it uses, then decodes [small, 6000x6000 RGB PNG, small]: the
# big one is within every FrameLimits bound, but its 144 MB of pixels cannot be allocated.
_UNDER_RLIMIT_AS = textwrap.dedent("""
    import json, resource, sys, zlib
    from etl.decode import decode_batch
    from framestream import hostile
    from models.spec import PreprocessSpec

    spec = PreprocessSpec()
    small = hostile.png_gray8().data
    big = hostile.png_from_header(6000, 6000, zlib.compress(b"\\0" * (6000 * 3 + 1) * 6000, 1),
                                  color_type=2)
    assert len(decode_batch([small], spec).ok_index) == 1
    with open("/proc/self/status") as f:
        vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (vm + 48 * 2**20, resource.RLIM_INFINITY))
    try:
        batch = decode_batch([small, big, small], spec)
    except BaseException as exc:
        print(json.dumps({"raised": type(exc).__name__}))
    else:
        print(json.dumps({"ok": batch.ok_index.tolist(), "reasons": batch.reasons,
                          "details": batch.details}))
""")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmSize from /proc")
def test_out_of_memory_fails_the_batch_instead_of_becoming_a_dead_letter() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", _UNDER_RLIMIT_AS], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome == {"raised": "MemoryError"}, outcome


def test_a_system_error_from_pillow_fails_the_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    good = hostile.png_gray8().data

    def no_fds(*_args: object, **_kwargs: object) -> Image.Image:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(Image, "open", no_fds)  # the boundary: Pillow's entry point
    with pytest.raises(OSError) as err:
        decode_batch([good, good], FASHION)
    assert err.value.errno == errno.EMFILE
    with pytest.raises(OSError):
        decode_one(good, FASHION)


def test_out_of_memory_while_reading_exif_is_not_a_frame_without_rotation(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Unreadable EXIF means "no rotation"; EXIF that could not be read *now* must not."""
    frame = hostile.jpeg_exif_rotated().data

    def out_of_memory(self: Image.Image) -> Image.Exif:
        raise MemoryError()

    monkeypatch.setattr(Image.Image, "getexif", out_of_memory)
    with pytest.raises(MemoryError):
        decode_batch([frame], FASHION)


@pytest.mark.parametrize("kind, reason", [("truncated_png", Reason.TRUNCATED),
                                          ("truncated_jpeg", Reason.TRUNCATED),
                                          ("truncated_webp", Reason.TRUNCATED),
                                          ("corrupt_png_data", Reason.UNDECODABLE)])
def test_pillow_errors_about_the_data_stay_dead_letters(kind: str, reason: Reason) -> None:
    batch = decode_batch([hostile.BAD[kind]().data], FASHION)
    assert batch.reasons == [reason.value], batch.details
    with pytest.raises(FrameRejected) as err:
        decode_one(hostile.BAD[kind]().data, FASHION)
    cause = err.value.__cause__
    assert cause is None or not is_transient(cause)


def test_which_errors_are_transient() -> None:
    assert is_transient(MemoryError())
    assert is_transient(OSError(errno.ENOMEM, "Cannot allocate memory"))
    assert is_transient(OSError(errno.EMFILE, "Too many open files"))
    assert is_transient(OSError("decoder jpeg2k not available"))
    for about_the_bytes in (OSError("image file is truncated (3 bytes not processed)"),
                            OSError("broken data stream when reading image file"),
                            OSError("decoder error -2"), SyntaxError("not a TIFF file"),
                            ValueError("tile cannot extend outside image"), EOFError()):
        assert not is_transient(about_the_bytes), about_the_bytes
