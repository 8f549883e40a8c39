"""The data plane's dispatcher: credits, deadlines, re-sends, avoidance and generations as a pure
state machine. Events go in, actions come out; it never touches a socket, a clock or a thread.

Every event carries ``now``, the caller's monotonic clock in seconds (the executor's own: deadlines
are never compared across hosts). The caller (the ZeroMQ pump in :mod:`etl.client`, which also
serves the training feed) moves the bytes the actions ask for and reports what came back::

    events in                                     actions out
    submit(now, rid, tag, payload)                Send(rank, request, ttl)      put it on the wire
    answer(now, generation, rank, rid, reply)     Cancel(rank, rid)             withdraw it there
    refused(now, generation, rank, rid, code, ..) Deliver(request, rank, reply) the caller's answer
    garbled(now, generation, rank)                Fail(request, code, detail)   refused for good
    unreachable(now, rank, rid)                   Refresh()                     re-read endpoints
    tick(now)                                     Unavailable(...)              no rank, give up
    new_generation(now, generation, ranks)

Rules, each a test in ``tests/unit/test_dispatch.py``:

- Credits: a rank has at most ``credits_per_rank`` requests in flight; the rest wait, oldest
  first. A request goes to the least loaded rank that is not avoided, never back to the rank that
  just let it down when another can take it, ties taken in turn so light load spreads too.
- Deadlines: a request not answered ``request_timeout_s`` after it was sent is withdrawn at its
  rank (``Cancel``, for cancellable requests), re-sent to another rank, and its rank is avoided
  for ``request_timeout_s`` or until it is heard from again (any reply clears avoidance).
- Replies are matched by request id. The first answer wins, also a late one from the rank that
  missed the deadline (then the copy sent since is withdrawn); a second answer, an answer to an
  unknown id or one from an older generation is dropped and counted (:attr:`Dispatcher.dropped`).
- An ``EXPIRED`` refusal (the rank got to it after its ttl) is no answer and no progress: the
  request waits for its own deadline; any other refusal fails the request.
- Generations: the endpoint set is published as a whole, so ranks change only as a generation
  (there is no single rank added or removed); what was in flight goes to the new ranks. Work
  waiting with nothing in flight (every rank silent) asks for a ``Refresh`` every
  ``stalled_refresh_s``; after ``outage_timeout_s`` without a useful answer, ``Unavailable``.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Any

EXPIRED = "EXPIRED"  # the error code of a rank that got to a request after its ttl


@dataclass(frozen=True)
class Policy:
    credits_per_rank: int
    request_timeout_s: float
    outage_timeout_s: float
    reconnect_probe_s: float = 0.02  # a rank whose connection was not up is tried again after
    refresh_every_s: float = 1.0     # how often to look for a newer generation while working
    stalled_refresh_s: float = 0.2   # ... while work waits and nothing is in flight
    stalled_probe_s: float = 0.05    # how soon a stalled dispatcher wants its next tick

    def __post_init__(self) -> None:
        if self.credits_per_rank < 1:
            raise ValueError(f"credits_per_rank must be >= 1, got {self.credits_per_rank}")
        for name in ("request_timeout_s", "outage_timeout_s", "reconnect_probe_s",
                     "refresh_every_s", "stalled_refresh_s", "stalled_probe_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number of seconds > 0, got {value!r}")


@dataclass
class Request:
    rid: str
    tag: Any
    payload: Any                 # opaque here: what the caller puts on the wire
    seq: int                     # submission order; waiting requests are kept in it
    cancellable: bool = True     # whether a rank takes a CANCEL for it
    rank: int = -1               # the rank it was last sent to (-1: none of this generation)
    deadline: float = 0.0        # the caller's clock
    attempts: int = 0


@dataclass(frozen=True)
class Send:
    rank: int
    request: Request
    ttl: float                   # what the rank is told: seconds it may still take


@dataclass(frozen=True)
class Cancel:
    rank: int
    rid: str


@dataclass(frozen=True)
class Deliver:
    request: Request
    rank: int                    # the rank that answered
    reply: Any


@dataclass(frozen=True)
class Fail:
    request: Request
    code: str
    detail: str


@dataclass(frozen=True)
class Refresh:
    """Read the endpoint set again; call :meth:`Dispatcher.new_generation` if it is newer."""


@dataclass(frozen=True)
class Unavailable:
    generation: int
    waited_s: float              # since the last useful answer (or since work first stalled)
    expired_replies: int         # EXPIRED refusals since the last useful answer


Action = Send | Cancel | Deliver | Fail | Refresh | Unavailable


@dataclass
class _Rank:
    inflight: set[str] = field(default_factory=set)
    avoid_until: float = 0.0

    def avoided(self, now: float) -> bool:
        return self.avoid_until > now


class Dispatcher:
    def __init__(self, policy: Policy, first_turn: int = 0) -> None:
        self.policy = policy
        self.generation = -1
        self.resent = 0            # requests re-sent after their deadline
        self.dropped = 0           # replies that matched nothing (duplicate, late, old, unknown)
        self.expired_replies = 0   # EXPIRED refusals since the last useful answer
        self.peak_in_flight = 0    # most requests one rank has held at once
        self._ranks: list[_Rank] = []
        self._queue: list[Request] = []       # waiting for a credit, in submission order
        self._open: dict[str, Request] = {}   # sent, waiting for an answer
        self._seq = 0
        self._turn = first_turn
        self._outage_since: float | None = None
        self._next_refresh = 0.0

    # -- queries ------------------------------------------------------------------------------
    def pending(self) -> int:
        return len(self._queue) + len(self._open)

    def queued(self) -> int:
        return len(self._queue)

    def in_flight(self, rank: int) -> int:
        return len(self._ranks[rank].inflight)

    def avoided(self, now: float) -> list[int]:
        return [i for i, r in enumerate(self._ranks) if r.avoided(now)]

    def wake_in(self, now: float) -> float:
        """Seconds until the next tick has something to do (a deadline, an avoided rank coming
        back while work waits, a stalled probe); ``inf`` when nothing is pending."""
        at = min((r.deadline for r in self._open.values()), default=math.inf)
        if self._queue:
            at = min([at] + [r.avoid_until for r in self._ranks if r.avoided(now)])
            if not self._open:
                at = min(at, now + self.policy.stalled_probe_s)
        return max(0.0, at - now)

    # -- events -------------------------------------------------------------------------------
    def submit(self, now: float, rid: str, tag: Any, payload: Any,
               cancellable: bool = True) -> list[Action]:
        if rid in self._open or any(r.rid == rid for r in self._queue):
            raise ValueError(f"request id {rid!r} is already pending")
        self._queue.append(Request(rid, tag, payload, self._seq, cancellable))
        self._seq += 1
        return self._assign(now)

    def answer(self, now: float, generation: int, rank: int, rid: str,
               reply: Any) -> list[Action]:
        took = self._take(generation, rank, rid)
        if took is None:
            return []
        req, sent_to = took
        out: list[Action] = []
        if sent_to not in (None, rank) and req.cancellable:
            out.append(Cancel(sent_to, rid))  # a late answer beat the copy re-sent since
        out.append(Deliver(req, rank, reply))
        return out + self._assign(now)

    def refused(self, now: float, generation: int, rank: int, rid: str, code: str,
                detail: str) -> list[Action]:
        if code == EXPIRED:
            self._heard(generation, rank)
            self.expired_replies += 1
            # no answer and no progress: the request's own deadline re-sends it; but the rank is
            # alive, so work waiting for it (it may have been avoided) can go now
            return self._assign(now)
        took = self._take(generation, rank, rid)
        if took is None:
            return []
        return [Fail(took[0], code, detail)] + self._assign(now)

    def garbled(self, now: float, generation: int, rank: int) -> list[Action]:
        """A reply that could not be read: the rank is alive, nothing else is known."""
        self._heard(generation, rank)
        return self._assign(now)

    def unreachable(self, now: float, rank: int, rid: str) -> list[Action]:
        """The Send for ``rid`` could not go out (no connection to ``rank`` yet)."""
        req = self._open.get(rid)
        if req is None or req.rank != rank:
            return []  # not in flight there (any more): nothing to take back
        del self._open[rid]
        self._ranks[rank].inflight.discard(rid)
        self._ranks[rank].avoid_until = now + self.policy.reconnect_probe_s
        req.attempts -= 1
        self._requeue(req)
        return self._assign(now)

    def tick(self, now: float) -> list[Action]:
        # Stalled: work waited and nothing was in flight since the last event (every rank avoided,
        # or every send found no connection). Judged before this tick sends anything, on what the
        # caller reported back since.
        stalled = bool(self._queue) and not self._open
        out = self._expire(now)
        last: list[Action] = []  # after the sends: a look for a new generation, or giving up
        if stalled:
            if self._outage_since is None:
                self._outage_since = now
            if now >= self._next_refresh:
                self._next_refresh = now + self.policy.stalled_refresh_s
                return out + [Refresh()]  # a newer generation, if any, comes before giving up
            if all(r.avoided(now) for r in self._ranks):
                for r in self._ranks:  # silent ranks get another chance: they may be only slow
                    r.avoid_until = 0.0
            if now - self._outage_since > self.policy.outage_timeout_s:
                last.append(Unavailable(self.generation, now - self._outage_since,
                                        self.expired_replies))
        elif now >= self._next_refresh:
            self._next_refresh = now + self.policy.refresh_every_s
            last.append(Refresh())
        return out + self._assign(now) + last

    def new_generation(self, now: float, generation: int, ranks: int) -> list[Action]:
        """The ranks were relaunched: ``ranks`` new ones; what was in flight goes to them."""
        for req in self._open.values():
            self._requeue(req)
        self._open.clear()
        for req in self._queue:
            req.rank = -1  # an index of the old generation means nothing now
        self._ranks = [_Rank() for _ in range(ranks)]
        self.generation = generation
        return self._assign(now)

    # -- internals ----------------------------------------------------------------------------
    def _heard(self, generation: int, rank: int) -> bool:
        if generation != self.generation or not 0 <= rank < len(self._ranks):
            return False
        self._ranks[rank].avoid_until = 0.0
        return True

    def _take(self, generation: int, rank: int, rid: str) -> tuple[Request, int | None] | None:
        """The pending request ``rid`` answered from (generation, rank), taken out of the books,
        with the rank it is in flight at (None: it was waiting); None (counted in ``dropped``)
        when the reply matches nothing."""
        if not self._heard(generation, rank):
            self.dropped += 1  # from an older generation: its request was re-sent since
            return None
        req = self._open.pop(rid, None)
        sent_to = None if req is None else req.rank
        if req is not None:
            self._ranks[req.rank].inflight.discard(rid)
        else:
            i = next((i for i, r in enumerate(self._queue) if r.rid == rid), None)
            if i is None:
                self.dropped += 1  # a second answer, or an id this dispatcher never sent
                return None
            req = self._queue.pop(i)  # a late answer to a request waiting to be re-sent
        self._outage_since, self.expired_replies = None, 0
        return req, sent_to

    def _requeue(self, req: Request) -> None:
        bisect.insort(self._queue, req, key=lambda r: r.seq)

    def _expire(self, now: float) -> list[Action]:
        out: list[Action] = []
        for rid, req in list(self._open.items()):
            if req.deadline > now:
                continue
            del self._open[rid]
            silent = self._ranks[req.rank]
            silent.inflight.discard(rid)
            silent.avoid_until = now + self.policy.request_timeout_s
            if req.cancellable:  # if it still waits at the slow rank, it is not computed twice
                out.append(Cancel(req.rank, rid))
            self.resent += 1
            self._requeue(req)
        return out

    def _assign(self, now: float) -> list[Action]:
        out: list[Action] = []
        credits, n = self.policy.credits_per_rank, len(self._ranks)
        while self._queue:
            live = [i for i, r in enumerate(self._ranks)
                    if not r.avoided(now) and len(r.inflight) < credits]
            if not live:
                break
            req = self._queue.pop(0)
            # least loaded, not the rank that just failed this request when there is another,
            # ties taken in turn so that light load spreads over the ranks too
            rank = min(live, key=lambda i: (i == req.rank, len(self._ranks[i].inflight),
                                            (i - self._turn) % n))
            self._turn = (rank + 1) % n
            req.rank, req.attempts = rank, req.attempts + 1
            req.deadline = now + self.policy.request_timeout_s
            self._ranks[rank].inflight.add(req.rid)
            self.peak_in_flight = max(self.peak_in_flight, len(self._ranks[rank].inflight))
            self._open[req.rid] = req
            out.append(Send(rank, req, self.policy.request_timeout_s))
        return out
