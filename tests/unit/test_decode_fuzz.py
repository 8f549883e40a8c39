"""Fuzzing etl.decode: random bytes and mutated valid images only ever give FrameRejected from
decode_one, and decode_batch never raises and never hits its internal-error fallback."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from etl.decode import FrameLimits, FrameRejected, decode_batch, decode_one
from framestream import fashion_mnist
from framestream.frames import encode_image
from models.spec import PreprocessSpec
from framestream import hostile

SPECS = (PreprocessSpec(), PreprocessSpec(16, 12, 3, (0.5,) * 3, (0.25,) * 3, "bicubic"))
LIMITS = FrameLimits()  # the production defaults: the limits are part of what is fuzzed


def _seeds() -> list[bytes]:
    images, _ = fashion_mnist.load("test")
    seeds = [encode_image(images[0], fmt) for fmt in ("png", "jpeg", "webp", "bmp")]
    seeds += [hostile.VALID[k]().data for k in sorted(hostile.VALID) if k != "jpeg_large"]
    return seeds


SEEDS = _seeds()
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid image with a few byte flips, an insertion, a deletion and/or a cut."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 8))):
        op = draw(st.sampled_from(("flip", "insert", "delete", "cut", "header")))
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[at] = draw(st.integers(0, 255))
        elif op == "header":  # hit the first 64 bytes, where sizes and modes are declared
            at %= min(64, len(data))
            data[at] = draw(st.sampled_from((0x00, 0x01, 0x7F, 0x80, 0xFF)))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[at:at + draw(st.integers(1, 16))]
        else:
            del data[at:]
    return bytes(data)


def _decode_only_rejects(data: bytes, spec: PreprocessSpec) -> None:
    try:
        out = decode_one(data, spec, LIMITS)
    except FrameRejected as rejected:
        assert rejected.detail
    else:
        assert out.shape == spec.shape and out.dtype == np.uint8


@FUZZ
@given(data=st.binary(max_size=4096), spec=st.sampled_from(SPECS))
def test_random_bytes_are_only_ever_rejected(data: bytes, spec: PreprocessSpec) -> None:
    _decode_only_rejects(data, spec)


@FUZZ
@given(data=mutated(), spec=st.sampled_from(SPECS))
def test_mutated_images_decode_or_are_rejected(data: bytes, spec: PreprocessSpec) -> None:
    _decode_only_rejects(data, spec)


@settings(max_examples=40, deadline=None)
@given(rows=st.lists(st.one_of(st.none(), st.binary(max_size=512), mutated()), max_size=12))
def test_decode_batch_accounts_for_every_row(rows: list[bytes | None]) -> None:
    batch = decode_batch(rows, SPECS[0], LIMITS)
    assert sorted(batch.ok_index.tolist() + batch.bad_index.tolist()) == list(range(len(rows)))
    assert len(batch.reasons) == len(batch.details) == len(batch.bad_index)
    assert batch.images.shape == (len(batch.ok_index), *SPECS[0].shape)
    assert not any(d.startswith("internal error") for d in batch.details), batch.details


@pytest.mark.parametrize("cut", [1, 8, 16, 33, 64, 100])
def test_every_seed_cut_short_is_rejected_not_raised(cut: int) -> None:
    for seed in SEEDS:
        _decode_only_rejects(seed[:cut], SPECS[0])
