"""The framestream wire protocol between Spark executors and MPI ranks (ZeroMQ multipart).

One message = one ZeroMQ multipart message::

    frame 0      header: a msgpack map (below), at most MAX_HEADER_BYTES
    frame 1..n   raw tensor buffers, C-contiguous, little-endian, one per entry of "tensors",
                 sent and received without copies (``send_multipart(copy=False)``)

Header keys (version 2)::

    v       int        protocol version; a rank answers a different one with ERROR
    op      str        one of Op
    id      int|str    request id, echoed in the reply
    tensors [ {dtype: str, shape: [int...]} ]   one per buffer frame, in order
    model   str|None   model version wanted (request) or used (reply)
    ttl     float|None seconds the sender still wants the answer, counted by the receiver's own
                       monotonic clock from the moment it takes the message off its socket
    meta    map        op-specific extras (error code and text, counts, ...); str keys, plain values

Version 2 replaced version 1's absolute ``deadline`` (a UNIX time compared on the rank's clock, so
hosts whose clocks disagreed by more than the request timeout answered every request EXPIRED) with
the remaining duration ``ttl``: no wall clock of one host is ever compared with another's.

Control ops (SHUTDOWN, END) carry ``meta["token"]``: the gang's control token, which the code that
starts mpirun creates and hands to the ranks alone (:data:`CONTROL_TOKEN_ENV`); executors and
anyone else who can reach the data socket never have it, so a rank refuses their control messages
with ERROR ``FORBIDDEN`` (:func:`control_allowed`). CANCEL (client -> rank, ``meta["request"]``:
the id of an INFER the same peer sent) withdraws a request still waiting at the rank.

No pickle, no msgpack extension types: a header is plain maps, lists, strings and numbers. Every
decode error, whatever the bytes, is a :class:`ProtocolError` with a reason code, and a decoded
message can always be materialised: each tensor's element count and dimensions are bounded
(:data:`MAX_ELEMENTS`, :data:`MAX_DIM`) even when its byte count is 0.
"""

from __future__ import annotations

import enum
import hmac
import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np

from framestream.errors import FramestreamError

VERSION = 2
MAX_HEADER_BYTES = 64 * 1024
MAX_TENSORS = 16
MAX_NDIM = 8
MAX_DIM = 2**31 - 1       # any one dimension
MAX_ELEMENTS = 2**31      # product of the dimensions, zeros counted as 1: what numpy must index
MAX_MESSAGE_BYTES = 256 * 1024 * 1024  # all buffers together; a rank's own limit may be lower

#: dtypes allowed on the wire (numpy names); anything else is refused.
DTYPES = frozenset({"uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64",
                    "bool"})


class Op(str, enum.Enum):
    INFER = "INFER"          # tensors: [images uint8 NHWC]            -> RESULT
    RESULT = "RESULT"        # tensors: [scores float32 N x classes]
    TRAIN = "TRAIN"          # tensors: [images uint8 NHWC, labels int64 N] -> ACK
    ACK = "ACK"
    PING = "PING"            # -> PONG (meta: rank, model, queue depth, ...)
    PONG = "PONG"
    SHUTDOWN = "SHUTDOWN"    # meta: {token} -> ACK, then the rank drains and exits
    END = "END"              # meta: {token}; to a training rank: no more TRAIN data -> ACK
    CANCEL = "CANCEL"        # meta: {request: id}; withdraw a queued INFER -> ACK {cancelled: 0|1}
    ERROR = "ERROR"          # meta: {"code": ..., "detail": ...}


class ProtocolError(FramestreamError, ValueError):
    """A message that does not follow the protocol. ``code`` is a short reason tag."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class Message:
    op: Op
    id: int | str = 0
    tensors: tuple[np.ndarray, ...] = ()
    model: str | None = None
    ttl: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def reply(self, op: Op, tensors: Sequence[np.ndarray] = (), model: str | None = None,
              **meta: Any) -> "Message":
        """A reply to this message: same id, no ttl, none of the request's meta."""
        return Message(op, self.id, tuple(tensors), model, None, meta)

    def error(self, code: str, detail: str) -> "Message":
        return self.reply(Op.ERROR, code=code, detail=detail)


def encode(msg: Message) -> list[Any]:
    """Frames for ``socket.send_multipart(frames, copy=False)``: the header, then each tensor's
    own memory (a view, no copy, when the array is already C-contiguous little-endian)."""
    bufs = []
    specs = []
    for t in msg.tensors:
        arr = np.asarray(t)
        if arr.dtype.name not in DTYPES:
            raise ProtocolError("BAD_DTYPE", f"dtype {arr.dtype} cannot go on the wire")
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        arr = np.ascontiguousarray(arr)
        specs.append({"dtype": arr.dtype.name, "shape": list(arr.shape)})
        bufs.append(memoryview(arr).cast("B") if arr.size else b"")
    header = {"v": VERSION, "op": msg.op.value, "id": msg.id, "tensors": specs,
              "model": msg.model, "ttl": msg.ttl, "meta": msg.meta}
    return [msgpack.packb(header, use_bin_type=True), *bufs]


def _unpack_header(raw: Any) -> dict[str, Any]:
    data = memoryview(raw)
    if data.nbytes > MAX_HEADER_BYTES:
        raise ProtocolError("HEADER_TOO_LARGE", f"{data.nbytes} bytes > {MAX_HEADER_BYTES}")
    try:
        header = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True,
                                 ext_hook=_no_ext)
    except ProtocolError:
        raise
    except Exception as exc:  # msgpack raises several unrelated types for bad bytes
        raise ProtocolError("BAD_HEADER", f"not a msgpack map: {type(exc).__name__}: {exc}") from None
    if not isinstance(header, dict):
        raise ProtocolError("BAD_HEADER", f"header is a {type(header).__name__}, not a map")
    return header


def _no_ext(code: int, data: bytes) -> Any:
    raise ProtocolError("BAD_HEADER", f"msgpack extension type {code} is not allowed")


def _check_spec(i: int, spec: Any) -> tuple[np.dtype, tuple[int, ...]]:
    if not isinstance(spec, dict) or set(spec) != {"dtype", "shape"}:
        raise ProtocolError("BAD_TENSOR", f"tensor {i}: spec must be {{dtype, shape}}, got {spec!r}")
    dtype, shape = spec["dtype"], spec["shape"]
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise ProtocolError("BAD_DTYPE", f"tensor {i}: dtype {dtype!r} not in {sorted(DTYPES)}")
    if (not isinstance(shape, list) or len(shape) > MAX_NDIM
            or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= MAX_DIM
                       for d in shape)):
        raise ProtocolError("BAD_SHAPE", f"tensor {i}: shape {str(shape)[:200]} is not a list of "
                                         f"<= {MAX_NDIM} ints in 0..{MAX_DIM}")
    # numpy indexes every dimension even when another one is 0 (np.empty((0, 2**39, 2**39))
    # raises "array is too big"): bound the product with zeros counted as 1.
    span = math.prod(max(d, 1) for d in shape)
    if span > MAX_ELEMENTS:
        raise ProtocolError("BAD_SHAPE", f"tensor {i}: shape {shape} spans {span} elements (zero "
                                         f"dimensions counted as 1), more than {MAX_ELEMENTS}")
    return np.dtype(dtype).newbyteorder("<"), tuple(shape)


def decode(frames: Sequence[Any], max_bytes: int = MAX_MESSAGE_BYTES) -> Message:
    """Parse and check a multipart message. Tensors are read-only views on the frames' memory.

    Raises only :class:`ProtocolError`: whatever the bytes, a check this module forgot becomes
    ``BAD_MESSAGE`` rather than an exception the receiver did not expect.
    """
    try:
        return _decode(frames, max_bytes)
    except ProtocolError:
        raise
    except Exception as exc:  # noqa: BLE001 - the rule: nothing a message holds escapes otherwise
        raise ProtocolError("BAD_MESSAGE", f"{type(exc).__name__}: {exc}"[:500]) from None


def _decode(frames: Sequence[Any], max_bytes: int) -> Message:
    if not frames:
        raise ProtocolError("EMPTY", "no frames")
    header = _unpack_header(frames[0])
    version = header.get("v")
    if version != VERSION:
        raise ProtocolError("BAD_VERSION", f"protocol version {version!r}, this side speaks {VERSION}")
    try:
        op = Op(header.get("op"))
    except ValueError:
        raise ProtocolError("BAD_OP", f"unknown op {header.get('op')!r}") from None
    msg_id = header.get("id", 0)
    if not isinstance(msg_id, (int, str)) or isinstance(msg_id, bool):
        raise ProtocolError("BAD_ID", f"id must be an int or str, got {type(msg_id).__name__}")
    model, ttl, meta = header.get("model"), header.get("ttl"), header.get("meta", {})
    if model is not None and not isinstance(model, str):
        raise ProtocolError("BAD_HEADER", f"model must be a str, got {type(model).__name__}")
    if ttl is not None and (not isinstance(ttl, (int, float)) or isinstance(ttl, bool)
                            or not math.isfinite(ttl) or ttl < 0):
        raise ProtocolError("BAD_HEADER", f"ttl must be a finite number of seconds >= 0, "
                                          f"got {ttl!r}")
    if not isinstance(meta, dict):
        raise ProtocolError("BAD_HEADER", f"meta must be a map, got {type(meta).__name__}")
    specs = header.get("tensors", [])
    if not isinstance(specs, list) or len(specs) > MAX_TENSORS:
        raise ProtocolError("BAD_TENSOR", f"tensors must be a list of <= {MAX_TENSORS} specs")
    if len(specs) != len(frames) - 1:
        raise ProtocolError("FRAME_COUNT", f"{len(specs)} tensor specs but {len(frames) - 1} "
                                           f"buffer frames")
    tensors = []
    total = 0
    for i, (spec, frame) in enumerate(zip(specs, frames[1:])):
        dtype, shape = _check_spec(i, spec)
        buf = memoryview(frame).cast("B")
        want = math.prod(shape) * dtype.itemsize
        if buf.nbytes != want:
            raise ProtocolError("BAD_LENGTH", f"tensor {i}: {dtype.name}{list(shape)} needs {want} "
                                              f"bytes, frame has {buf.nbytes}")
        total += want
        if total > max_bytes:
            raise ProtocolError("TOO_LARGE", f"message buffers exceed {max_bytes} bytes")
        arr = np.frombuffer(buf, dtype=dtype).reshape(shape) if want else np.empty(shape, dtype)
        tensors.append(arr)
    return Message(op, msg_id, tuple(tensors), model, float(ttl) if ttl is not None else None,
                   meta)


# -- control ops ------------------------------------------------------------------------------
CONTROL_TOKEN_ENV = "FRAMESTREAM_CONTROL_TOKEN"
CONTROL_OPS = frozenset({Op.SHUTDOWN, Op.END})


def new_control_token() -> str:
    """A fresh random token for one gang (the code that starts mpirun makes it)."""
    return secrets.token_urlsafe(32)


def control_allowed(msg: Message, token: str | None) -> bool:
    """Whether ``msg`` carries the gang's control token. A rank without a token takes no control
    op at all (it is stopped by a signal)."""
    given = msg.meta.get("token")
    return bool(token) and isinstance(given, str) and hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), str(token).encode("utf-8", "surrogatepass"))
