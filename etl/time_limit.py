"""A wall-clock limit per frame, for decoding on an executor.

    with FrameClock(2.0) as clock:          # once per batch: installs the SIGALRM handler
        for frame in frames:
            clock.arm()                     # per frame: TimeLimitExceeded after 2 s ...
            try:
                decode(frame)
            finally:
                clock.disarm()              # ... unless it is done by then

It uses ``SIGALRM`` (``setitimer``), so it interrupts Pillow between the blocks it hands to its C
decoders -- a decompression bomb or a pathological file cannot hold an executor -- and costs two
system calls per frame (the handler is installed once per batch).

Rules it keeps so that it can live in any process:

- Only in the main thread (signals are delivered there); elsewhere frames run unlimited.
- An alarm that someone else armed (pytest-timeout, a job's own watchdog) is put back on exit
  with what is left of it; if it is due sooner than ours, ours is not used at all.
- :class:`TimeLimitExceeded` derives from ``BaseException``, so the ``except Exception`` blocks
  inside Pillow cannot swallow it; the handler only raises while a frame is armed.
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Any


class TimeLimitExceeded(BaseException):
    """The frame ran out of time (raised inside the limited block by the alarm)."""


class FrameClock:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.active = False
        self._armed = False
        self._previous: Any = None
        self._outer = (0.0, 0.0)
        self._entered = 0.0

    def _on_alarm(self, _signum: int, _frame: object) -> None:
        if self._armed:
            self._armed = False
            raise TimeLimitExceeded()

    def __enter__(self) -> "FrameClock":
        if self.seconds <= 0 or threading.current_thread() is not threading.main_thread():
            return self
        self._outer = signal.getitimer(signal.ITIMER_REAL)
        if self._outer[0] and self._outer[0] <= self.seconds:
            return self  # an outer alarm is due first and will fire anyway: leave it alone
        self._previous = signal.signal(signal.SIGALRM, self._on_alarm)
        self._entered = time.monotonic()
        self.active = True
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.active:
            return
        self._armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self._previous)
        self.active = False
        delay, interval = self._outer
        if delay:
            left = max(1e-3, delay - (time.monotonic() - self._entered))
            signal.setitimer(signal.ITIMER_REAL, left, interval)

    def arm(self) -> None:
        """Start the frame's clock: TimeLimitExceeded is raised after ``seconds``."""
        if self.active:
            self._armed = True
            signal.setitimer(signal.ITIMER_REAL, self.seconds)

    def disarm(self) -> None:
        """Stop it; call in a ``finally``. From here on a late alarm is ignored."""
        if self.active:
            self._armed = False
            signal.setitimer(signal.ITIMER_REAL, 0)
