"""Dynamic batching as a pure function: which waiting requests go into which forward pass.

A rank drains every request waiting on its socket, then :func:`plan` groups them: expired ones
(deadline passed: the client has already re-sent them elsewhere) are answered with an error and
skipped. Deadlines are the rank's own: ``time.monotonic()`` when the request was taken off the
socket plus the ``ttl`` it carried, and ``now`` is the same clock (never another host's time).
The rest are grouped by the model version they ask for, in arrival order, into batches of at most
``max_batch`` frames. A request larger than ``max_batch`` is a batch of its own (the
rank runs it in slices). No batch ever mixes model versions.

Request ids are the client's (:mod:`framestream.dispatch` makes them unique per client): a request
id that a peer sends again while its first copy still waits here supersedes that copy, which is
dropped unanswered (``Plan.superseded``), so it is computed and answered once; a CANCEL from the
same peer withdraws a waiting copy (:func:`withdraw`). The rank takes nothing else from the
dispatcher: choosing ranks, credits and re-sends are the client's business.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Pending:
    ident: bytes | Any          # the ROUTER identity frame to reply to
    request_id: int | str
    frames: int                 # how many images the request carries
    version: str                # the model version it is to be answered by
    deadline: float | None      # this rank's time.monotonic() after which to drop it, or None
    payload: Any = None         # the decoded message (opaque here)


@dataclass
class Plan:
    batches: list[list[Pending]] = field(default_factory=list)
    expired: list[Pending] = field(default_factory=list)
    superseded: list[Pending] = field(default_factory=list)  # earlier copies of a re-sent id


def peer_of(ident: Any) -> bytes:
    """The ROUTER identity as bytes (a zmq.Frame off the socket, or bytes)."""
    return ident.bytes if hasattr(ident, "bytes") else bytes(ident)


def withdraw(pending: list[Pending], peer: bytes, request_id: int | str) -> int:
    """Take ``peer``'s request ``request_id`` out of ``pending`` (in place); how many went."""
    keep = [p for p in pending if not (p.request_id == request_id and peer_of(p.ident) == peer)]
    gone = len(pending) - len(keep)
    pending[:] = keep
    return gone


def late(batch: list[Pending], now: float) -> tuple[list[Pending], list[Pending]]:
    """(still in time, deadline passed) at ``now``: an earlier batch of the same drain may have
    taken long."""
    ok = [p for p in batch if p.deadline is None or p.deadline > now]
    return ok, [p for p in batch if p.deadline is not None and p.deadline <= now]


def plan(pending: list[Pending], max_batch: int, now: float) -> Plan:
    """``now``: the rank's ``time.monotonic()``, the clock the deadlines were set on."""
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    out = Plan()
    last: dict[tuple[bytes, int | str], Pending] = {}
    for p in pending:
        last[(peer_of(p.ident), p.request_id)] = p
    if len(last) < len(pending):
        keep = {id(p) for p in last.values()}
        out.superseded = [p for p in pending if id(p) not in keep]
        pending = [p for p in pending if id(p) in keep]
    open_batch: dict[str, list[Pending]] = {}
    open_size: dict[str, int] = {}
    for p in pending:
        if p.deadline is not None and p.deadline <= now:
            out.expired.append(p)
            continue
        if p.frames >= max_batch:
            out.batches.append([p])
            continue
        if open_size.get(p.version, 0) + p.frames > max_batch:
            out.batches.append(open_batch.pop(p.version))
            open_size.pop(p.version)
        open_batch.setdefault(p.version, []).append(p)
        open_size[p.version] = open_size.get(p.version, 0) + p.frames
    out.batches.extend(open_batch.values())
    return out
