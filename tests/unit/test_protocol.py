"""The wire protocol: exact round trips, and a clear ProtocolError for anything malformed."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from framestream.wire import (DTYPES, MAX_DIM, MAX_ELEMENTS, MAX_HEADER_BYTES, VERSION,
                                  Message, Op, ProtocolError, control_allowed, decode, encode,
                                  new_control_token)


def _wire(frames: list) -> list[bytes]:
    return [bytes(f) for f in frames]  # what arrives on the other side: plain bytes


@pytest.mark.parametrize("dtype", sorted(DTYPES))
def test_round_trip_every_dtype(dtype: str) -> None:
    arr = (np.arange(24) % 7).astype(dtype).reshape(2, 3, 4)
    msg = Message(Op.RESULT, "req-1", (arr,), model="v3", ttl=1.5, meta={"rank": 1})
    got = decode(_wire(encode(msg)))
    assert got == Message(Op.RESULT, "req-1", got.tensors, "v3", 1.5, {"rank": 1})
    assert got.tensors[0].dtype == arr.dtype and got.tensors[0].tobytes() == arr.tobytes()


def test_non_contiguous_big_endian_and_empty_tensors() -> None:
    base = np.arange(60, dtype=np.float64).reshape(6, 10)
    strided = base[::2, ::3]
    big = np.arange(5, dtype=">i4")
    empty = np.zeros((0, 28, 28), np.uint8)
    got = decode(_wire(encode(Message(Op.INFER, 1, (strided, big, empty)))))
    assert np.array_equal(got.tensors[0], strided)
    assert np.array_equal(got.tensors[1], big) and got.tensors[1].dtype == np.dtype("<i4")
    assert got.tensors[2].shape == (0, 28, 28)


def test_encode_is_zero_copy_for_contiguous_arrays() -> None:
    arr = np.ones((4, 4), np.float32)
    frames = encode(Message(Op.INFER, 1, (arr,)))
    assert np.shares_memory(np.frombuffer(frames[1], np.float32), arr)


def test_decode_is_zero_copy_view_on_the_frame() -> None:
    arr = np.arange(16, dtype=np.float32)
    header, payload = encode(Message(Op.INFER, 1, (arr,)))
    buf = bytearray(payload)
    got = decode([header, buf])
    buf[:4] = np.float32(99).tobytes()
    assert got.tensors[0][0] == 99  # a view on the received frame, not a copy


def _header(**kw) -> bytes:
    base = {"v": VERSION, "op": "INFER", "id": 1, "tensors": [], "model": None, "ttl": None,
            "meta": {}}
    base.update(kw)
    return msgpack.packb(base)


@pytest.mark.parametrize("frames, code", [
    ([], "EMPTY"),
    ([b"\xc1"], "BAD_HEADER"),
    ([msgpack.packb([1, 2])], "BAD_HEADER"),
    ([msgpack.packb({"v": 1, "x": msgpack.ExtType(5, b"boom")})], "BAD_HEADER"),
    ([_header(v=VERSION + 1)], "BAD_VERSION"),
    ([_header(v=1, deadline=1.0)], "BAD_VERSION"),  # version 1's absolute deadlines are gone
    ([_header(ttl=-1.0)], "BAD_HEADER"),
    ([_header(ttl=float("inf"))], "BAD_HEADER"),
    ([_header(ttl="5")], "BAD_HEADER"),
    ([_header(op="EXEC")], "BAD_OP"),
    ([_header(id=[1])], "BAD_ID"),
    ([_header(ttl=float("nan"))], "BAD_HEADER"),
    ([_header(meta=[1])], "BAD_HEADER"),
    ([_header(tensors=[{"dtype": "object", "shape": [1]}]), b"x"], "BAD_DTYPE"),
    ([_header(tensors=[{"dtype": "uint8", "shape": [-1]}]), b"x"], "BAD_SHAPE"),
    ([_header(tensors=[{"dtype": "uint8", "shape": [1] * 9}]), b"x"], "BAD_SHAPE"),
    ([_header(tensors=[{"dtype": "uint8", "shape": [2, 2]}]), b"xyz"], "BAD_LENGTH"),
    ([_header(tensors=[{"dtype": "uint8", "shape": [1]}])], "FRAME_COUNT"),
    ([_header(tensors=[{"dtype": "uint8", "shape": [1], "extra": 1}]), b"x"], "BAD_TENSOR"),
    ([b"\x00" * (MAX_HEADER_BYTES + 1)], "HEADER_TOO_LARGE"),
])
def test_malformed_messages_raise_protocol_error(frames: list[bytes], code: str) -> None:
    with pytest.raises(ProtocolError) as err:
        decode(frames)
    assert err.value.code == code


def test_message_over_the_size_cap_is_refused() -> None:
    arr = np.zeros(1024, np.uint8)
    with pytest.raises(ProtocolError, match="TOO_LARGE"):
        decode(_wire(encode(Message(Op.INFER, 1, (arr,)))), max_bytes=1000)


def test_unknown_dtype_cannot_be_encoded() -> None:
    with pytest.raises(ProtocolError, match="BAD_DTYPE"):
        encode(Message(Op.INFER, 1, (np.array(["a"]),)))


# Specs a peer can craft that pass a byte-count check: the product is 0, or small, yet numpy would
# have to index absurd dimensions (issue 14: [0, 2**39, 2**39] with an empty buffer killed a gang).
CRAFTED = [
    ("uint8", [0, 2**39, 2**39]),
    ("float64", [2**39, 2**39, 0]),
    ("bool", [0] + [2**31 - 1] * 7),
    ("int64", [0, MAX_DIM + 1]),
    ("uint8", [0, 2**62, 2**62, 2**62]),
    ("uint8", [0, 2**63]),
]


@pytest.mark.parametrize("dtype, shape", CRAFTED)
def test_crafted_shapes_with_no_bytes_are_refused_not_raised(dtype: str, shape: list) -> None:
    frames = [_header(tensors=[{"dtype": dtype, "shape": shape}]), b""]
    with pytest.raises(ProtocolError) as err:
        decode(frames)
    assert err.value.code == "BAD_SHAPE"


def test_zero_dims_within_bounds_still_decode() -> None:
    got = decode([_header(tensors=[{"dtype": "uint8", "shape": [0, 28, 28, 1]}]), b""])
    assert got.tensors[0].shape == (0, 28, 28, 1)
    span = [0, 2**16, 2**15]  # exactly MAX_ELEMENTS with the zero counted as 1
    assert 2**16 * 2**15 == MAX_ELEMENTS
    got = decode([_header(tensors=[{"dtype": "float64", "shape": span}]), b""])
    assert got.tensors[0].size == 0


def test_ttl_round_trip_and_replies_carry_none() -> None:
    msg = decode(_wire(encode(Message(Op.INFER, 9, (), "v1", ttl=2.5))))
    assert msg.ttl == 2.5 and msg.reply(Op.RESULT).ttl is None


def test_control_token_check() -> None:
    token = new_control_token()
    assert len(token) >= 32 and token != new_control_token()
    end = Message(Op.END, 1, meta={"token": token})
    assert control_allowed(end, token)
    assert not control_allowed(Message(Op.END, 1), token)
    assert not control_allowed(Message(Op.END, 1, meta={"token": token[:-1] + "x"}), token)
    assert not control_allowed(Message(Op.END, 1, meta={"token": 5}), token)
    assert not control_allowed(end, None) and not control_allowed(Message(Op.END, 1), "")
    assert "token" not in end.reply(Op.ACK).meta  # a reply never echoes it


dims = st.one_of(st.integers(0, 4), st.just(0), st.integers(2**20, 2**64 - 1), st.sampled_from(
    [2**31 - 1, 2**31, 2**32, 2**39, 2**63 - 1, 2**63, 2**64 - 1]), st.integers(-2**63, -1),
    st.booleans(), st.floats(allow_nan=True), st.text(max_size=2), st.none())
specs = st.fixed_dictionaries({"dtype": st.sampled_from(sorted(DTYPES) + ["object", "U8", "<f4",
                                                                          "float128", "V3", ""]),
                               "shape": st.lists(dims, max_size=12)})


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(specs, min_size=1, max_size=3), st.data())
def test_fuzz_structured_specs_decode_or_refuse(tensor_specs: list[dict], data) -> None:
    """Structured specs (zero, huge, negative, bool, float dims; every dtype; too many dims), with
    buffers of the length the spec claims (when small) or empty: decode gives a tensor of exactly
    that spec, or ProtocolError; nothing else."""
    buffers = []
    for spec in tensor_specs:
        want = 0
        if spec["dtype"] in DTYPES and all(type(d) is int and 0 <= d < 2**16
                                           for d in spec["shape"]):
            n = 1
            for d in spec["shape"]:
                n *= d
            want = n * np.dtype(spec["dtype"]).itemsize
        buffers.append(b"\x01" * want if want <= 4096 and data.draw(st.booleans()) else b"")
    try:
        msg = decode([_header(tensors=tensor_specs), *buffers])
    except ProtocolError as exc:
        assert exc.code
        return
    for t, spec in zip(msg.tensors, tensor_specs):
        assert list(t.shape) == spec["shape"] and t.dtype.name == spec["dtype"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=256), min_size=1, max_size=4))
def test_fuzz_random_frames_never_crash(frames: list[bytes]) -> None:
    try:
        decode(frames)
    except ProtocolError:
        pass


json_values = st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1)
                           | st.floats(allow_nan=False) | st.text(max_size=8),
                           lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c,
                                                                                max_size=3),
                           max_leaves=8)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["v", "op", "id", "tensors", "model", "ttl", "meta",
                                        "dtype", "shape"]), json_values, max_size=7),
       st.lists(st.binary(max_size=64), max_size=3))
def test_fuzz_structured_headers_never_crash(header: dict, buffers: list[bytes]) -> None:
    try:
        decode([msgpack.packb(header), *buffers])
    except ProtocolError:
        pass
