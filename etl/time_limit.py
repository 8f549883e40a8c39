"""A CPU-time limit per frame, for decoding on an executor.

    with FrameClock(2.0) as clock:          # once per batch: installs the SIGPROF handler
        for frame in frames:
            clock.arm()                     # per frame: TimeLimitExceeded after 2 CPU s ...
            try:
                decode(frame)
            finally:
                clock.disarm()              # ... unless it is done by then

It counts **CPU time** (``ITIMER_PROF``: user + system time of this process), not wall time, so
what it measures is the work the frame's bytes demand, not the moment: a loaded machine, a
SIGSTOP, swapping or a slow disk do not count, and a frame that fits on one run fits on a replay
(``etl.decode`` turns an expiry into the ``timeout`` dead letter; see the README's "Hostile
input" for what that guarantees). It interrupts Pillow between the calls it makes into its C
decoders (one input block, one output pass); the declared-size limits bound the work of each such
call. Two system calls per frame (the handler is installed once per batch).

Rules it keeps so that it can live in any process:

- Only in the main thread (signals are delivered there); elsewhere frames run unlimited.
- It leaves ``SIGALRM``/``ITIMER_REAL`` alone (pytest-timeout, a job's own watchdog). If someone
  else already runs a CPU timer (a sampling profiler), ours stays off rather than fight it.
- :class:`TimeLimitExceeded` derives from ``BaseException``, so the ``except Exception`` blocks
  inside Pillow cannot swallow it; the handler only raises while a frame is armed.
"""

from __future__ import annotations

import signal
import threading
from typing import Any


class TimeLimitExceeded(BaseException):
    """The frame ran out of time (raised inside the limited block by the alarm)."""


class FrameClock:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.active = False
        self._armed = False
        self._previous: Any = None

    def _on_alarm(self, _signum: int, _frame: object) -> None:  # SIGPROF
        if self._armed:
            self._armed = False
            raise TimeLimitExceeded()

    def __enter__(self) -> "FrameClock":
        if self.seconds <= 0 or threading.current_thread() is not threading.main_thread():
            return self
        if signal.getitimer(signal.ITIMER_PROF)[0]:
            return self  # someone else's CPU timer (a profiler): leave it alone
        self._previous = signal.signal(signal.SIGPROF, self._on_alarm)
        self.active = True
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.active:
            return
        self._armed = False
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, self._previous)
        self.active = False

    def arm(self) -> None:
        """Start the frame's clock: TimeLimitExceeded after ``seconds`` of CPU time."""
        if self.active:
            self._armed = True
            signal.setitimer(signal.ITIMER_PROF, self.seconds)

    def disarm(self) -> None:
        """Stop it; call in a ``finally``. From here on a late alarm is ignored."""
        if self.active:
            self._armed = False
            signal.setitimer(signal.ITIMER_PROF, 0)
