"""The few named exceptions every role may raise. Messages say what to do next."""

from __future__ import annotations


class FramestreamError(Exception):
    """Base of every framestream error.

    ``exit_status``: what an entry point exits with when this ends it (the table:
    :mod:`framestream.exits`; 1 = the work did not succeed).
    """

    exit_status = 1


class ConfigError(FramestreamError, ValueError):
    """A setting has a bad value. The message names the setting, the value and what is allowed."""

    exit_status = 2  # usage

    def __init__(self, setting: str, value: object, expected: str) -> None:
        self.setting = setting
        self.value = value
        super().__init__(f"bad setting {setting}={value!r}: expected {expected}")


class DeadlineExceeded(FramestreamError, TimeoutError):
    """Something waited on another process for longer than allowed.

    The message says what waited for what, for how long, and which setting raises the limit.
    """

    exit_status = 3  # an engine or service did not answer in time

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

    exit_status = 3  # an engine or service failed
