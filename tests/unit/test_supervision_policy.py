"""The rank supervision state machine: every transition, no processes."""

from __future__ import annotations

import random

import pytest

from launcher.policy import GiveUp, Launch, Nothing, State, SupervisionPolicy, Terminate, Wait


def running(**kw) -> SupervisionPolicy:
    pol = SupervisionPolicy(rng=random.Random(0), **kw)
    assert pol.start(published_generation=4) == Launch(5)
    assert pol.published(5) == Nothing() and pol.state is State.RUNNING
    return pol


def test_start_launches_the_generation_after_the_published_one() -> None:
    pol = SupervisionPolicy()
    assert pol.start(0) == Launch(1) and pol.state is State.LAUNCHING


def test_failure_backs_off_then_relaunches_a_new_generation() -> None:
    pol = running(backoff_s=1.0, jitter=0.0)
    action = pol.exited(137, "rank 1 killed")
    assert action == Wait(1.0) and pol.state is State.BACKOFF
    assert pol.backoff_done() == Launch(6) and pol.restarts == 1
    assert pol.published(6) == Nothing()
    assert pol.exited(1) == Wait(2.0)  # exponential


def test_backoff_is_jittered_and_capped() -> None:
    pol = running(backoff_s=10.0, backoff_max_s=15.0, jitter=0.2, max_restarts=10)
    for base in (10.0, 15.0, 15.0):  # 10, then 20 and 40 capped at 15; each +-20 %
        wait = pol.exited(1)
        assert isinstance(wait, Wait) and 0.8 * base <= wait.seconds <= 1.2 * base
        pol.backoff_done()
        pol.published(pol.generation)


def test_gives_up_after_max_restarts_with_the_last_failure() -> None:
    pol = running(max_restarts=1)
    pol.exited(1, "first")
    pol.backoff_done()
    action = pol.exited(1, "second: rank 0 on vm")
    assert isinstance(action, GiveUp) and "second: rank 0 on vm" in action.reason
    assert pol.state is State.FAILED


def test_failure_while_launching_counts_too() -> None:
    pol = SupervisionPolicy(jitter=0.0)
    pol.start()
    assert isinstance(pol.exited(1), Wait)


def test_clean_exit_stops() -> None:
    pol = running()
    assert pol.exited(0) == Nothing() and pol.state is State.STOPPED


def test_stop_terminates_a_running_gang_and_its_exit_is_not_a_failure() -> None:
    pol = running()
    assert pol.stop() == Terminate() and pol.state is State.STOPPING
    assert pol.exited(143) == Nothing() and pol.state is State.STOPPED
    assert pol.failures == []


def test_stop_during_backoff_cancels_the_relaunch() -> None:
    pol = running()
    pol.exited(1)
    assert pol.stop() == Nothing() and pol.state is State.STOPPED
    assert pol.backoff_done() == Nothing()


def test_illegal_events_raise() -> None:
    pol = SupervisionPolicy()
    with pytest.raises(RuntimeError, match="not expected in state idle"):
        pol.published(1)
    pol = running()
    with pytest.raises(RuntimeError):
        pol.start()
    with pytest.raises(RuntimeError):
        pol.backoff_done()
    with pytest.raises(RuntimeError):
        pol.published(99)
