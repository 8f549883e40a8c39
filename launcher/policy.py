"""Supervision of a gang of ranks as pure state machines: events in, actions out.

Two policies, one per kind of job. :class:`SupervisionPolicy` keeps serving ranks alive (a
failure is relaunched as a new generation). :class:`CompletionPolicy` runs a job to completion
(retraining, Kafka retraining): never relaunched once it succeeded, a failure retried a bounded
number of times (0 by default), success only with rank 0's result file, a deadline for the whole
run. The code that owns the mpirun process (:mod:`launcher.gang`, :mod:`launcher.api`) feeds
them events and carries out the actions; nothing here touches processes, so every transition is
unit-tested in milliseconds.

SupervisionPolicy:

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
from typing import Any


def jittered_backoff(base_s: float, cap_s: float, tries: int, jitter: float, rng: Any) -> float:
    """Seconds to wait before try ``tries + 1``: exponential from ``base_s``, capped at
    ``cap_s``, times 1 ± ``jitter`` (both policies below use it)."""
    return min(cap_s, base_s * 2 ** tries) * (1 + rng.uniform(-jitter, jitter))


class State(enum.Enum):
    IDLE = "idle"
    LAUNCHING = "launching"
    RUNNING = "running"
    BACKOFF = "backoff"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"
    SUCCEEDED = "succeeded"  # a run-to-completion job that finished with its result


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


@dataclass(frozen=True)
class Finished:
    """A run-to-completion job succeeded: exit 0 and its result file."""


Action = Launch | Wait | Terminate | GiveUp | Nothing | Finished


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
        return Wait(jittered_backoff(self.backoff_s, self.backoff_max_s, self.restarts,
                                     self.jitter, self.rng))

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


@dataclass
class CompletionPolicy:
    """A job that runs to completion::

        IDLE --start--> RUNNING --exited(0, result)--> SUCCEEDED
                           |  --exited(fail | no result)--> BACKOFF --backoff_done--> RUNNING
                           |        (retries < max_retries)            --> FAILED (used up)
                           +--timed_out--> FAILED (the deadline covers every try)

    Exit 0 without rank 0's result file is a failure when ``require_result`` (a job that
    "succeeded" but says nothing about what it produced is not trusted).
    """

    max_retries: int = 0
    backoff_s: float = 1.0
    backoff_max_s: float = 30.0
    jitter: float = 0.2
    require_result: bool = True
    rng: random.Random = field(default_factory=random.Random)
    state: State = State.IDLE
    attempt: int = 0
    retries: int = 0
    failures: list[str] = field(default_factory=list)

    def _illegal(self, event: str) -> None:
        raise RuntimeError(f"event {event!r} is not expected in state {self.state.value}")

    def start(self) -> Action:
        if self.state is not State.IDLE:
            self._illegal("start")
        self.attempt, self.state = 1, State.RUNNING
        return Launch(self.attempt)

    def exited(self, code: int, has_result: bool, report: str = "") -> Action:
        """The launch ended with mpirun's ``code``; ``has_result``: rank 0 wrote its result."""
        if self.state is State.STOPPING:
            self.state = State.STOPPED
            return Nothing()
        if self.state is not State.RUNNING:
            self._illegal(f"exited({code})")
        if code == 0 and (has_result or not self.require_result):
            self.state = State.SUCCEEDED
            return Finished()
        self.failures.append(report or (f"exit code {code}" if code else
                                        "every rank exited 0 but rank 0 wrote no result file"))
        if self.retries >= self.max_retries:
            self.state = State.FAILED
            tries = f"{self.attempt} tries" if self.attempt > 1 else "1 try"
            return GiveUp(f"the job failed ({tries}, retry limit {self.max_retries}); "
                          f"last: {self.failures[-1]}")
        self.state = State.BACKOFF
        return Wait(jittered_backoff(self.backoff_s, self.backoff_max_s, self.retries,
                                     self.jitter, self.rng))

    def backoff_done(self) -> Action:
        if self.state in (State.STOPPING, State.STOPPED):
            self.state = State.STOPPED
            return Nothing()
        if self.state is not State.BACKOFF:
            self._illegal("backoff_done")
        self.retries += 1
        self.attempt += 1
        self.state = State.RUNNING
        return Launch(self.attempt)

    def timed_out(self, seconds: float, setting: str) -> Action:
        """The run's deadline passed (the caller stops the ranks); no retry after that."""
        if self.state not in (State.RUNNING, State.BACKOFF):
            self._illegal("timed_out")
        self.state = State.FAILED
        self.failures.append(f"timed out after {seconds:.0f}s")
        return GiveUp(f"the job did not finish within {seconds:.0f}s (raise {setting})")

    def stop(self) -> Action:
        if self.state is State.RUNNING:
            self.state = State.STOPPING
            return Terminate()
        if self.state in (State.IDLE, State.BACKOFF):
            self.state = State.STOPPED
        return Nothing()
