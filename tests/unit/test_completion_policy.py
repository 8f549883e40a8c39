"""The run-to-completion policy (retraining, Kafka retraining): every transition, no processes."""

from __future__ import annotations

import random

import pytest

from launcher.policy import (CompletionPolicy, Finished, GiveUp, Launch, Nothing, State, Terminate,
                             Wait)


def running(**kw) -> CompletionPolicy:
    pol = CompletionPolicy(rng=random.Random(0), jitter=0.0, **kw)
    assert pol.start() == Launch(1) and pol.state is State.RUNNING
    return pol


def test_success_with_a_result_finishes_and_is_never_relaunched() -> None:
    pol = running(max_retries=3)
    assert pol.exited(0, has_result=True) == Finished() and pol.state is State.SUCCEEDED
    with pytest.raises(RuntimeError, match="not expected in state succeeded"):
        pol.backoff_done()
    with pytest.raises(RuntimeError):
        pol.exited(0, has_result=True)


def test_exit_0_without_the_result_file_is_a_failure() -> None:
    pol = running()
    action = pol.exited(0, has_result=False)
    assert isinstance(action, GiveUp) and pol.state is State.FAILED
    assert "wrote no result file" in action.reason
    lenient = running(require_result=False)
    assert lenient.exited(0, has_result=False) == Finished()


def test_no_retries_by_default_the_first_failure_gives_up_with_its_report() -> None:
    pol = running()
    action = pol.exited(1, False, "rank 1 on h (pid 7) failed: ValueError: x")
    assert isinstance(action, GiveUp) and "ValueError: x" in action.reason
    assert "retry limit 0" in action.reason and pol.retries == 0


def test_bounded_retries_back_off_then_relaunch_then_give_up() -> None:
    pol = running(max_retries=2, backoff_s=1.0)
    assert pol.exited(1, False) == Wait(1.0) and pol.state is State.BACKOFF
    assert pol.backoff_done() == Launch(2) and pol.retries == 1
    assert pol.exited(134, False) == Wait(2.0)
    assert pol.backoff_done() == Launch(3)
    action = pol.exited(1, False, "third")
    assert isinstance(action, GiveUp) and "3 tries" in action.reason and "third" in action.reason
    assert pol.failures == ["exit code 1", "exit code 134", "third"]


def test_a_retry_that_succeeds_finishes() -> None:
    pol = running(max_retries=1)
    pol.exited(1, False)
    pol.backoff_done()
    assert pol.exited(0, True) == Finished() and pol.attempt == 2


def test_timeout_gives_up_without_retrying_and_names_the_setting() -> None:
    pol = running(max_retries=5)
    action = pol.timed_out(60, "FRAMESTREAM_CRON_JOB_TIMEOUT_S")
    assert isinstance(action, GiveUp) and pol.state is State.FAILED
    assert "60s" in action.reason and "FRAMESTREAM_CRON_JOB_TIMEOUT_S" in action.reason
    waiting = running(max_retries=5)
    waiting.exited(1, False)
    assert isinstance(waiting.timed_out(5, "--timeout"), GiveUp)  # the deadline covers backoff


def test_stop_terminates_a_running_job_and_ends_a_backoff() -> None:
    pol = running()
    assert pol.stop() == Terminate() and pol.state is State.STOPPING
    assert pol.exited(143, False) == Nothing() and pol.state is State.STOPPED
    backing = running(max_retries=1)
    backing.exited(1, False)
    assert backing.stop() == Nothing() and backing.backoff_done() == Nothing()
    assert backing.state is State.STOPPED
