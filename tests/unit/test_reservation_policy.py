"""The gang reservation state machine: every transition, and the message it gives up with."""

from __future__ import annotations

import random

import pytest

from launcher.policy import GiveUp, Nothing, Wait
from launcher.reservation import (
    ClusterView,
    Release,
    Reserve,
    ReservationPolicy,
    RState,
    diagnose,
)

TWO = [{"CPU": 1.0}, {"CPU": 1.0}]
BUSY = ClusterView(free={"CPU": 1.0, "memory": 5e9, "node:10.0.0.1": 1.0},
                   total={"CPU": 2.0, "memory": 9e9}, nodes=({"CPU": 2.0},))


def policy(**kw) -> ReservationPolicy:
    kw.setdefault("rng", random.Random(0))
    kw.setdefault("timeout_s", 5.0)
    return ReservationPolicy(TWO, **kw)


def reserving(**kw) -> ReservationPolicy:
    pol = policy(**kw)
    assert pol.start() == Reserve(1, pol.timeout_s) and pol.state is RState.RESERVING
    return pol


def test_start_asks_for_the_first_attempt_with_the_deadline() -> None:
    pol = policy(timeout_s=7.5)
    assert pol.start() == Reserve(attempt=1, timeout_s=7.5)
    assert pol.state is RState.RESERVING and pol.attempt == 1


def test_ready_holds_the_gang_and_finish_releases_it_for_good() -> None:
    pol = reserving()
    assert pol.ready() == Nothing() and pol.state is RState.RESERVED
    assert pol.finish() == Release("done") and pol.state is RState.RELEASING
    assert pol.released() == Nothing() and pol.state is RState.RELEASED


def test_timeout_releases_then_backs_off_then_tries_again() -> None:
    pol = reserving(backoff_s=1.0, jitter=0.0, retries=2)
    assert pol.timed_out(BUSY) == Release("timeout") and pol.state is RState.RELEASING
    assert pol.last_view == BUSY and pol.waited_s == 5.0
    assert pol.released() == Wait(1.0) and pol.state is RState.BACKOFF
    assert pol.backoff_done() == Reserve(2, 5.0) and pol.state is RState.RESERVING
    pol.timed_out(BUSY)
    assert pol.released() == Wait(2.0)  # exponential
    assert pol.backoff_done() == Reserve(3, 5.0)
    assert pol.ready() == Nothing() and pol.attempt == 3


def test_backoff_is_jittered_and_capped() -> None:
    pol = reserving(backoff_s=10.0, backoff_max_s=15.0, jitter=0.2, retries=5)
    for base in (10.0, 15.0, 15.0):
        pol.timed_out(BUSY)
        wait = pol.released()
        assert isinstance(wait, Wait) and 0.8 * base <= wait.seconds <= 1.2 * base
        pol.backoff_done()


def test_gives_up_after_retries_with_what_was_asked_free_and_which_flag() -> None:
    pol = reserving(retries=1)
    pol.timed_out(BUSY)
    pol.released()
    pol.backoff_done()
    pol.timed_out(BUSY)
    action = pol.released()
    assert isinstance(action, GiveUp) and pol.state is RState.FAILED
    msg = action.reason
    assert "2 bundles" in msg and "'CPU': 2.0" in msg and "after 2 attempts of 5s" in msg
    assert "free in the cluster: {'CPU': 1.0} of {'CPU': 2.0}" in msg  # no memory/node: noise
    assert "--retries 1" in msg and "raise --timeout or --retries" in msg
    assert pol.waited_s == 10.0


def test_no_retries_fails_after_the_first_timeout() -> None:
    pol = reserving(retries=0)
    pol.timed_out(BUSY)
    assert isinstance(pol.released(), GiveUp)


def test_cancel_while_reserving_releases_and_does_not_retry() -> None:
    pol = reserving()
    assert pol.cancel() == Release("cancel") and pol.state is RState.RELEASING
    assert pol.released() == Nothing() and pol.state is RState.RELEASED


def test_cancel_while_reserved_releases() -> None:
    pol = reserving()
    pol.ready()
    assert pol.cancel() == Release("cancel")
    assert pol.released() == Nothing() and pol.state is RState.RELEASED


def test_cancel_during_backoff_ends_without_another_attempt() -> None:
    pol = reserving()
    pol.timed_out(BUSY)
    pol.released()
    assert pol.cancel() == Nothing() and pol.state is RState.RELEASED
    assert pol.backoff_done() == Nothing() and pol.attempt == 1


def test_cancel_while_a_timed_out_group_is_released_ends_after_that_release() -> None:
    pol = reserving()
    pol.timed_out(BUSY)
    assert pol.cancel() == Nothing() and pol.state is RState.RELEASING
    assert pol.released() == Nothing() and pol.state is RState.RELEASED


def test_cancel_before_start_and_after_the_end_is_harmless() -> None:
    pol = policy()
    assert pol.cancel() == Nothing() and pol.state is RState.RELEASED
    assert pol.cancel() == Nothing() and pol.state is RState.RELEASED
    failed = reserving(retries=0)
    failed.timed_out(BUSY)
    failed.released()
    assert failed.cancel() == Nothing() and failed.state is RState.FAILED


@pytest.mark.parametrize("setup, event", [
    ("idle", "ready"), ("idle", "finish"), ("idle", "released"), ("idle", "backoff_done"),
    ("reserving", "start"), ("reserving", "finish"), ("reserving", "released"),
    ("reserving", "backoff_done"), ("reserved", "ready"), ("reserved", "timed_out"),
    ("reserved", "released"), ("backoff", "ready"), ("backoff", "timed_out"),
    ("backoff", "finish"), ("idle", "timed_out"),
])
def test_events_out_of_order_raise(setup: str, event: str) -> None:
    pol = policy()
    if setup != "idle":
        pol.start()
    if setup == "reserved":
        pol.ready()
    if setup == "backoff":
        pol.timed_out(BUSY)
        pol.released()
    call = getattr(pol, event)
    with pytest.raises(RuntimeError, match="not expected in state"):
        call(BUSY) if event == "timed_out" else call()


def test_diagnose_names_the_flag_for_each_kind_of_misfit() -> None:
    two_nodes = ClusterView({"CPU": 0.0}, {"CPU": 4.0}, ({"CPU": 2.0}, {"CPU": 2.0}))
    big = [{"CPU": 4.0}, {"CPU": 4.0}]
    assert "never fit" in diagnose(big, "PACK", two_nodes) and "--ranks" in diagnose(big, "PACK", two_nodes)
    assert "CPU 8 > 4" in diagnose(big, "PACK", two_nodes)
    wide = [{"CPU": 3.0}]
    assert "bigger than any node" in diagnose(wide, "PACK", two_nodes)
    three = [{"CPU": 1.0}] * 3
    assert "--strategy SPREAD" in diagnose(three, "STRICT_SPREAD", two_nodes)
    assert "STRICT_PACK needs one node" in diagnose(three, "STRICT_PACK", two_nodes)
    assert "other gangs hold" in diagnose(three, "PACK", two_nodes)
    gpus = [{"CPU": 1.0, "GPU": 1.0}]
    assert "GPU 1 > 0" in diagnose(gpus, "PACK", two_nodes)
