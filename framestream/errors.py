"""The few named exceptions every role may raise. Messages say what to do next."""

from __future__ import annotations


class FramestreamError(Exception):
    """Base of every framestream error."""


class ConfigError(FramestreamError, ValueError):
    """A setting has a bad value. The message names the setting, the value and what is allowed."""

    def __init__(self, setting: str, value: object, expected: str) -> None:
        self.setting = setting
        self.value = value
        super().__init__(f"bad setting {setting}={value!r}: expected {expected}")


class DeadlineExceeded(FramestreamError, TimeoutError):
    """Something waited on another process for longer than allowed.

    The message says what waited for what, for how long, and which setting raises the limit.
    """

    def __init__(self, waiter: str, waited_for: str, seconds: float, setting: str | None = None,
                 detail: str = "") -> None:
        msg = f"{waiter} gave up waiting for {waited_for} after {seconds:.1f}s"
        if setting:
            msg += f" (raise {setting} to wait longer)"
        if detail:
            msg += f"\n{detail}"
        super().__init__(msg)
        self.seconds = seconds
        self.setting = setting


class ServiceError(FramestreamError, RuntimeError):
    """An engine (Kafka broker, Spark, MPI, Ray) is missing or failed; the message says how to fix it."""
