"""Gang reservation as a pure state machine: events in, actions out (LINE's Op 4-7).

Acquire the whole gang or nothing, give up after a deadline, release, retry. The code that talks
to Ray (:mod:`launcher.ray_gang`) creates and removes placement groups when told to and feeds the
outcome back; nothing here touches Ray, so every transition is unit-tested in milliseconds.

    IDLE --start--> RESERVING --ready--> RESERVED --finish/cancel--> RELEASING --released--> RELEASED
                        |  ^                                                  ^
              timed_out |  | backoff_done (attempt <= retries)                 |
                        v  |                                                   |
                    RELEASING --released--> BACKOFF --cancel--> RELEASED       |
                        |                                                      |
                        +--released (no attempts left)--> FAILED (GiveUp)      |
              RESERVING --cancel--> RELEASING ---------------------------------+
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field

from launcher.policy import GiveUp, Nothing, Wait


class RState(enum.Enum):
    IDLE = "idle"
    RESERVING = "reserving"
    RESERVED = "reserved"
    RELEASING = "releasing"
    BACKOFF = "backoff"
    RELEASED = "released"
    FAILED = "failed"


@dataclass(frozen=True)
class Reserve:
    """Create one placement group for every bundle and wait for it up to ``timeout_s``."""

    attempt: int
    timeout_s: float


@dataclass(frozen=True)
class Release:
    """Remove the placement group (and its holders); ``why``: timeout, done or cancel."""

    why: str


@dataclass(frozen=True)
class ClusterView:
    """What the cluster had when an attempt timed out: free and total resources, per-node totals."""

    free: dict[str, float]
    total: dict[str, float]
    nodes: tuple[dict[str, float], ...] = ()


Action = Reserve | Release | Wait | GiveUp | Nothing

_SKIP = ("memory", "object_store_memory")


def user_resources(resources: dict[str, float]) -> dict[str, float]:
    """Resources a person asks for (CPU, GPU, custom), without Ray's bookkeeping entries."""
    return {k: v for k, v in sorted(resources.items())
            if k not in _SKIP and "_group_" not in k and not k.startswith("node:")}


def diagnose(bundles: list[dict[str, float]], strategy: str, view: ClusterView) -> str:
    """Which flag to change: what can never fit, else that other gangs hold what is missing."""
    n = len(bundles)
    asked: dict[str, float] = {}
    for b in bundles:
        for k, v in b.items():
            asked[k] = asked.get(k, 0.0) + v
    total = user_resources(view.total)
    short = {k: (v, total.get(k, 0.0)) for k, v in asked.items() if v > total.get(k, 0.0)}
    if short:
        what = ", ".join(f"{k} {need:g} > {have:g}" for k, (need, have) in short.items())
        return (f"it can never fit: the whole cluster has less than asked ({what}); lower "
                f"--ranks, --cpus-per-rank, --gpus-per-rank or --resource, or add nodes")
    if view.nodes:
        biggest = [max(nd.get(k, 0.0) for nd in view.nodes) for k in bundles[0]]
        if any(bundles[0][k] > top for k, top in zip(bundles[0], biggest)):
            return ("it can never fit: one bundle is bigger than any node; lower "
                    "--cpus-per-rank, --gpus-per-rank or --resource")
        if strategy == "STRICT_SPREAD" and n > len(view.nodes):
            return (f"it can never fit: STRICT_SPREAD needs {n} nodes and the cluster has "
                    f"{len(view.nodes)}; use --strategy SPREAD or PACK, lower --ranks, or add nodes")
        if strategy == "STRICT_PACK" and not any(
                all(nd.get(k, 0.0) >= v for k, v in asked.items()) for nd in view.nodes):
            return ("it can never fit: STRICT_PACK needs one node with room for the whole gang; "
                    "use --strategy PACK or SPREAD, or lower --ranks")
    return ("the cluster can hold it, but other gangs hold what is missing: raise --timeout or "
            "--retries to wait for them, or stop one of them (python -m launcher status)")


@dataclass
class ReservationPolicy:
    bundles: list[dict[str, float]]
    strategy: str = "PACK"
    timeout_s: float = 60.0
    retries: int = 2
    backoff_s: float = 2.0
    backoff_max_s: float = 30.0
    jitter: float = 0.2
    rng: random.Random = field(default_factory=random.Random)
    state: RState = RState.IDLE
    attempt: int = 0
    waited_s: float = 0.0
    last_view: ClusterView | None = None
    _releasing_for: str = ""

    def _illegal(self, event: str) -> None:
        raise RuntimeError(f"reservation event {event!r} is not expected in state {self.state.value}")

    def start(self) -> Action:
        if self.state is not RState.IDLE:
            self._illegal("start")
        return self._reserve()

    def _reserve(self) -> Action:
        self.attempt += 1
        self.state = RState.RESERVING
        return Reserve(self.attempt, self.timeout_s)

    def ready(self) -> Action:
        if self.state is not RState.RESERVING:
            self._illegal("ready")
        self.state = RState.RESERVED
        return Nothing()

    def timed_out(self, view: ClusterView) -> Action:
        if self.state is not RState.RESERVING:
            self._illegal("timed_out")
        self.waited_s += self.timeout_s
        self.last_view = view
        return self._release("timeout")

    def _release(self, why: str) -> Action:
        self.state = RState.RELEASING
        self._releasing_for = why
        return Release(why)

    def released(self) -> Action:
        if self.state is not RState.RELEASING:
            self._illegal("released")
        if self._releasing_for != "timeout":
            self.state = RState.RELEASED
            return Nothing()
        if self.attempt > self.retries:
            self.state = RState.FAILED
            return GiveUp(self.failure_message())
        self.state = RState.BACKOFF
        delay = min(self.backoff_max_s, self.backoff_s * 2 ** (self.attempt - 1))
        return Wait(delay * (1 + self.rng.uniform(-self.jitter, self.jitter)))

    def backoff_done(self) -> Action:
        if self.state is RState.RELEASED:  # cancelled during the backoff
            return Nothing()
        if self.state is not RState.BACKOFF:
            self._illegal("backoff_done")
        return self._reserve()

    def finish(self) -> Action:
        """The job on the reservation ended: give the resources back."""
        if self.state is not RState.RESERVED:
            self._illegal("finish")
        return self._release("done")

    def cancel(self) -> Action:
        """Ctrl-C, SIGTERM or an error: release whatever is held, stop retrying."""
        if self.state in (RState.RESERVING, RState.RESERVED):
            return self._release("cancel")
        if self.state is RState.RELEASING:
            self._releasing_for = "cancel"  # a timeout's release now ends the reservation
            return Nothing()
        if self.state in (RState.IDLE, RState.BACKOFF):
            self.state = RState.RELEASED
        return Nothing()

    def failure_message(self) -> str:
        view = self.last_view or ClusterView({}, {})
        asked: dict[str, float] = {}
        for b in self.bundles:
            for k, v in b.items():
                asked[k] = asked.get(k, 0.0) + v
        tries = f"{self.attempt} attempt{'s' if self.attempt != 1 else ''}"
        return (f"could not reserve a gang of {len(self.bundles)} bundles {self.bundles[:1]} x "
                f"{len(self.bundles)} ({self.strategy}, {asked} in all) after {tries} of "
                f"{self.timeout_s:g}s (--timeout) with --retries {self.retries}; free in the "
                f"cluster: {user_resources(view.free) or 'nothing'} of {user_resources(view.total) or 'nothing'}; "
                f"{diagnose(self.bundles, self.strategy, view)}")
