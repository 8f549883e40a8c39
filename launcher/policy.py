"""Supervision of a gang of ranks as a pure state machine: events in, actions out.

The code that owns the mpirun process (:mod:`launcher.gang`) feeds it events and carries out the
actions; nothing here touches processes, so every transition is unit-tested in milliseconds.

    IDLE --start--> LAUNCHING --published--> RUNNING --exited(ok, stopping)--> STOPPED
                        |                       |
                        +--exited(fail)---------+--> BACKOFF --backoff_done--> LAUNCHING
                                                |        (restarts < max_restarts)
                                                +--> FAILED (restarts used up)
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field


class State(enum.Enum):
    IDLE = "idle"
    LAUNCHING = "launching"
    RUNNING = "running"
    BACKOFF = "backoff"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


@dataclass(frozen=True)
class Launch:
    generation: int


@dataclass(frozen=True)
class Wait:
    seconds: float


@dataclass(frozen=True)
class Terminate:
    pass


@dataclass(frozen=True)
class GiveUp:
    reason: str


@dataclass(frozen=True)
class Nothing:
    pass


Action = Launch | Wait | Terminate | GiveUp | Nothing


@dataclass
class SupervisionPolicy:
    max_restarts: int = 5
    backoff_s: float = 1.0
    backoff_max_s: float = 30.0
    jitter: float = 0.2
    rng: random.Random = field(default_factory=random.Random)
    state: State = State.IDLE
    generation: int = 0
    restarts: int = 0
    failures: list[str] = field(default_factory=list)

    def _illegal(self, event: str) -> None:
        raise RuntimeError(f"event {event!r} is not expected in state {self.state.value}")

    def start(self, published_generation: int = 0) -> Action:
        if self.state is not State.IDLE:
            self._illegal("start")
        self.generation = published_generation + 1
        self.state = State.LAUNCHING
        return Launch(self.generation)

    def published(self, generation: int) -> Action:
        if self.state is not State.LAUNCHING or generation != self.generation:
            self._illegal(f"published({generation})")
        self.state = State.RUNNING
        return Nothing()

    def exited(self, code: int, report: str = "") -> Action:
        """The mpirun job ended with ``code`` (0 = every rank exited cleanly)."""
        if self.state is State.STOPPING:
            self.state = State.STOPPED
            return Nothing()
        if self.state not in (State.LAUNCHING, State.RUNNING):
            self._illegal(f"exited({code})")
        if code == 0:  # ranks shut down on their own (SHUTDOWN op): nothing to keep alive
            self.state = State.STOPPED
            return Nothing()
        self.failures.append(report or f"exit code {code}")
        if self.restarts >= self.max_restarts:
            self.state = State.FAILED
            return GiveUp(f"the ranks failed {self.restarts + 1} times (restart limit "
                          f"{self.max_restarts}); last: {self.failures[-1]}")
        self.state = State.BACKOFF
        delay = min(self.backoff_max_s, self.backoff_s * 2 ** self.restarts)
        return Wait(delay * (1 + self.rng.uniform(-self.jitter, self.jitter)))

    def backoff_done(self) -> Action:
        if self.state in (State.STOPPING, State.STOPPED):
            self.state = State.STOPPED
            return Nothing()
        if self.state is not State.BACKOFF:
            self._illegal("backoff_done")
        self.restarts += 1
        self.generation += 1
        self.state = State.LAUNCHING
        return Launch(self.generation)

    def stop(self) -> Action:
        if self.state in (State.LAUNCHING, State.RUNNING):
            self.state = State.STOPPING
            return Terminate()
        if self.state in (State.IDLE, State.BACKOFF):
            self.state = State.STOPPED
        return Nothing()
