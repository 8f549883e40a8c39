"""The dispatcher, exactly: events in at given instants, the actions out compared in full.
No sockets, no clock, no sleeps (the whole file runs in milliseconds)."""

from __future__ import annotations

import pytest

from framestream.dispatch import (Cancel, Deliver, Dispatcher, Fail, Policy, Refresh, Send,
                                  Unavailable)

T = 1.0  # request timeout, s


def make(ranks: int = 2, credits: int = 2, outage: float = 10.0, generation: int = 1
         ) -> Dispatcher:
    d = Dispatcher(Policy(credits_per_rank=credits, request_timeout_s=T, outage_timeout_s=outage))
    assert d.new_generation(0.0, generation, ranks) == []
    return d


def sends(actions) -> list[tuple[int, str]]:
    return [(a.rank, a.request.rid) for a in actions if isinstance(a, Send)]


def work(actions) -> list:
    """The actions but the periodic look for a newer generation."""
    return [a for a in actions if not isinstance(a, Refresh)]


def kinds(actions) -> list[str]:
    return [type(a).__name__ for a in actions]


def submit(d: Dispatcher, now: float, *rids: str, cancellable: bool = True) -> list:
    out = []
    for rid in rids:
        out += d.submit(now, rid, f"tag-{rid}", f"payload-{rid}", cancellable)
    return out


def test_credit_exhaustion_holds_work_back_and_each_reply_frees_exactly_one_credit() -> None:
    d = make(ranks=2, credits=2)
    out = submit(d, 0.0, "a", "b", "c", "d", "e", "f")
    assert sends(out) == [(0, "a"), (1, "b"), (0, "c"), (1, "d")]  # 2 ranks x 2 credits
    assert all(a.ttl == T for a in out)
    assert (d.in_flight(0), d.in_flight(1), d.queued(), d.pending()) == (2, 2, 2, 6)
    assert d.tick(0.5) == [Refresh()]  # nothing due, nothing sent: every credit is taken
    out = d.answer(0.6, 1, 1, "b", "scores-b")
    assert kinds(out) == ["Deliver", "Send"] and sends(out) == [(1, "e")]
    assert out[0] == Deliver(out[0].request, 1, "scores-b") and out[0].request.tag == "tag-b"
    assert d.queued() == 1 and d.peak_in_flight == 2


def test_one_credit_per_rank_is_exactly_one_request_in_flight_per_rank() -> None:
    d = make(ranks=3, credits=1)
    assert sends(submit(d, 0.0, *"abcde")) == [(0, "a"), (1, "b"), (2, "c")]
    assert sends(d.answer(0.1, 1, 0, "a", "x")) == [(0, "d")]
    assert sends(d.answer(0.1, 1, 0, "d", "x")) == [(0, "e")]
    assert d.peak_in_flight == 1 and [d.in_flight(r) for r in range(3)] == [1, 1, 1]


def test_light_load_takes_the_ranks_in_turn() -> None:
    d = make(ranks=3)
    got = []
    for i in range(6):
        out = submit(d, i, f"r{i}")
        got += sends(out)
        d.answer(i + 0.1, 1, out[0].rank, f"r{i}", "x")
    assert [rank for rank, _ in got] == [0, 1, 2, 0, 1, 2]


def test_expiry_cancels_at_the_slow_rank_resends_elsewhere_and_avoids_it() -> None:
    d = make(ranks=2, credits=1)
    assert sends(submit(d, 0.0, "a", "b")) == [(0, "a"), (1, "b")]
    d.answer(0.2, 1, 1, "b", "x")
    assert work(d.tick(T - 0.001)) == []  # not yet: exactly at the deadline it is due
    out = work(d.tick(T))
    assert out == [Cancel(0, "a"), Send(1, out[1].request, T)]
    assert out[1].request.rid == "a" and out[1].request.attempts == 2 and d.resent == 1
    assert d.avoided(T) == [0] and d.avoided(2 * T) == []  # avoided for one request timeout
    assert sends(submit(d, T + 0.1, "c")) == []  # rank 1 is full and rank 0 avoided
    assert sends(d.answer(T + 0.2, 1, 1, "a", "x")) == [(1, "c")]  # not to the idle rank 0
    assert sends(submit(d, 2 * T, "d")) == [(0, "d")]  # the avoidance ran out


def test_a_training_request_is_resent_but_never_cancelled() -> None:
    d = make(ranks=2, credits=1)
    submit(d, 0.0, "t", cancellable=False)
    out = work(d.tick(T))
    assert out == [Send(1, out[0].request, T)] and d.resent == 1


def test_any_reply_clears_avoidance_at_once_and_waiting_work_goes() -> None:
    d = make(ranks=2, credits=1)
    submit(d, 0.0, "a", "b")
    assert kinds(d.tick(T)) == ["Cancel", "Cancel", "Refresh"]  # both silent, both avoided
    assert d.avoided(T) == [0, 1]
    out = d.refused(T + 0.1, 1, 1, "b", "EXPIRED", "too slow")  # heard from: back in
    assert sends(out) == [(1, "a")] and d.avoided(T + 0.1) == [0] and d.expired_replies == 1
    assert sends(d.garbled(T + 0.2, 1, 0)) == [(0, "b")]  # an unreadable reply is a sign of life


def test_a_late_answer_after_the_resend_wins_and_the_copy_is_withdrawn() -> None:
    d = make(ranks=2, credits=1)
    submit(d, 0.0, "a")
    assert sends(d.tick(T)) == [(1, "a")]
    out = d.answer(T + 0.1, 1, 0, "a", "late")  # the slow rank answers after all
    assert out == [Cancel(1, "a"), Deliver(out[1].request, 0, "late")]
    assert d.answer(T + 0.2, 1, 1, "a", "again") == []  # the re-sent copy's answer: a duplicate
    assert d.dropped == 1 and d.pending() == 0 and d.in_flight(1) == 0


def test_a_late_answer_to_a_request_waiting_to_be_resent_is_delivered_and_not_sent_again() -> None:
    d = make(ranks=1, credits=1)
    submit(d, 0.0, "a")
    assert kinds(d.tick(T)) == ["Cancel", "Refresh"]  # the only rank is avoided: "a" waits
    out = d.answer(T + 0.1, 1, 0, "a", "late")
    assert kinds(out) == ["Deliver"] and d.pending() == 0
    assert d.tick(3 * T) == [Refresh()]  # nothing is sent again


def test_duplicate_and_unknown_replies_are_dropped_and_change_nothing() -> None:
    d = make(ranks=2, credits=1)
    submit(d, 0.0, "a", "b", "c")
    assert kinds(d.answer(0.1, 1, 0, "a", "x")) == ["Deliver", "Send"]
    assert d.answer(0.2, 1, 0, "a", "x") == []         # the same answer twice
    assert d.answer(0.2, 1, 1, "nobody", "x") == []    # an id never sent
    assert d.refused(0.2, 1, 1, "nobody", "BAD_SHAPE", "?") == []
    assert d.answer(0.2, 1, 7, "b", "x") == []         # a rank this generation does not have
    assert d.dropped == 4
    assert (d.in_flight(0), d.in_flight(1), d.queued()) == (1, 1, 0)


def test_a_refusal_fails_the_request_and_frees_its_credit() -> None:
    d = make(ranks=1, credits=1)
    submit(d, 0.0, "a", "b")
    out = d.refused(0.1, 1, 0, "a", "BAD_SHAPE", "takes [N, 28, 28, 1]")
    assert out == [Fail(out[0].request, "BAD_SHAPE", "takes [N, 28, 28, 1]"), out[1]]
    assert out[0].request.rid == "a" and sends(out) == [(0, "b")]


def test_expired_replies_alone_end_in_unavailable_within_the_outage_bound() -> None:
    d = make(ranks=1, credits=1, outage=2.0)
    submit(d, 0.0, "a")
    steps = [  # (event at, what the tick then does); the rank answers each attempt EXPIRED
        (1.0, ["Cancel", "Refresh"]),   # deadline; a periodic look for a new generation
        (1.05, ["Send"]),               # stalled from here: the only rank gets another chance
        (2.05, ["Cancel", "Refresh"]),
        (2.1, ["Send"]),
        (3.1, ["Cancel", "Refresh"]),
        (3.15, ["Send", "Unavailable"]),  # stalled 2.1 s > 2.0 s
    ]
    for at, want in steps:
        if want[0] == "Cancel":
            assert d.refused(at - 0.5, 1, 0, "a", "EXPIRED", "too slow") == []
        out = d.tick(at)
        assert kinds(out) == want, at
    assert out[-1] == Unavailable(1, pytest.approx(2.1), 3)


def test_every_rank_avoided_asks_for_a_new_generation_retries_and_then_gives_up() -> None:
    d = make(ranks=2, credits=1, outage=2.0)
    submit(d, 0.0, "a", "b")
    assert d.tick(0.0) == [Refresh()]  # the first tick looks for a newer generation
    out = d.tick(T)  # both silent: both expire, both ranks avoided, nothing in flight
    assert kinds(out) == ["Cancel", "Cancel", "Refresh"] and d.avoided(T) == [0, 1]
    assert d.wake_in(T) == pytest.approx(0.05)  # a stalled dispatcher probes soon
    out = d.tick(T + 0.05)  # no newer generation came: every rank gets another chance
    assert sends(out) == [(1, "a"), (0, "b")]  # each to the rank that did not fail it
    out = d.tick(2 * T + 0.05)  # silent again; stalled since T + 0.05
    assert kinds(out) == ["Cancel", "Cancel", "Refresh"]
    assert kinds(d.tick(2 * T + 0.1)) == ["Send", "Send"]
    out = d.tick(3 * T + 0.1)  # silent a third time
    assert kinds(out) == ["Cancel", "Cancel", "Refresh"]  # a last look for a newer generation
    out = d.tick(3 * T + 0.15)  # stalled 2.1 s > 2.0 s
    assert kinds(out) == ["Send", "Send", "Unavailable"]
    assert out[-1] == Unavailable(1, pytest.approx(2 * T + 0.1), 0)


def test_a_useful_answer_resets_the_outage_clock() -> None:
    d = make(ranks=1, credits=1, outage=1.4)
    submit(d, 0.0, "a", "b")
    d.tick(0.0)
    assert kinds(d.tick(1.0)) == ["Cancel", "Refresh"]  # "a" expires
    assert sends(d.tick(1.05)) == [(0, "a")]  # stalled from 1.05
    assert sends(d.answer(1.5, 1, 0, "a", "x")) == [(0, "b")]  # progress
    assert kinds(d.tick(2.5)) == ["Cancel", "Refresh"]  # "b" expires
    out = d.tick(2.55)  # 1.5 s > 1.4 s after the first stall began, but this one just began
    assert kinds(out) == ["Send"]


def test_a_generation_change_mid_batch_moves_what_was_in_flight_to_the_new_ranks() -> None:
    d = make(ranks=2, credits=1)
    submit(d, 0.0, "a", "b", "c")
    assert sends(d.answer(0.1, 1, 0, "a", "x")) == [(0, "c")]
    out = d.new_generation(0.5, 2, 3)  # relaunched with three ranks, "b" and "c" in flight
    assert sends(out) == [(1, "b"), (2, "c")]  # oldest first, all at once, turns go on
    assert d.generation == 2 and all(a.request.attempts == 2 for a in out)
    assert d.answer(0.6, 1, 1, "b", "old") == []  # from the old generation's rank 1: dropped
    assert d.dropped == 1 and d.pending() == 2
    out = d.answer(0.7, 2, 1, "b", "new")
    assert kinds(out) == ["Deliver"] and out[0].reply == "new"
    out = work(d.tick(0.5 + T))  # "c" is due at the new rank 2; it goes to rank 0
    assert out == [Cancel(2, "c"), Send(0, out[1].request, T)]


def test_waiting_work_keeps_submission_order_through_resends() -> None:
    d = make(ranks=1, credits=1)
    submit(d, 0.0, "a", "b", "c")
    assert kinds(d.tick(T)) == ["Cancel", "Refresh"]  # "a" goes back before "b" and "c"
    assert sends(d.tick(T + 0.05)) == [(0, "a")]
    assert sends(d.answer(T + 0.1, 1, 0, "a", "x")) == [(0, "b")]


def test_ranks_that_cannot_be_reached_at_all_end_in_unavailable() -> None:
    d = make(ranks=1, credits=1, outage=0.1)
    out = submit(d, 0.0, "a")
    now = 0.0
    while not any(isinstance(a, Unavailable) for a in out):
        assert now < 0.2, "never gave up"
        for a in out:
            if isinstance(a, Send):
                d.unreachable(now, a.rank, a.request.rid)  # no connection, every time
        now = round(now + 0.025, 3)
        out = d.tick(now)
        if now == 0.025:  # stalled from here; the first look for a new generation
            assert out == [Refresh()]
    assert now == 0.15 and out[-1] == Unavailable(1, pytest.approx(0.125), 0)


def test_an_unreachable_rank_is_probed_again_shortly_and_the_request_goes_elsewhere() -> None:
    d = make(ranks=2, credits=2)
    assert sends(submit(d, 0.0, "a")) == [(0, "a")]
    out = d.unreachable(0.0, 0, "a")  # the connection to rank 0 is not up yet
    assert sends(out) == [(1, "a")] and out[0].request.attempts == 1
    assert d.avoided(0.0) == [0] and d.avoided(0.02) == []
    assert d.unreachable(0.0, 0, "a") == []  # not in flight there: nothing to take back


def test_nothing_pending_means_no_wake_up() -> None:
    d = make()
    assert d.wake_in(5.0) == float("inf")
    submit(d, 5.0, "a")
    assert d.wake_in(5.25) == pytest.approx(T - 0.25)  # the deadline


def test_ids_and_settings_are_checked() -> None:
    d = make()
    submit(d, 0.0, "a")
    with pytest.raises(ValueError, match="already pending"):
        submit(d, 0.0, "a")
    with pytest.raises(ValueError, match="credits_per_rank"):
        Policy(credits_per_rank=0, request_timeout_s=1.0, outage_timeout_s=1.0)
    with pytest.raises(ValueError, match="request_timeout_s"):
        Policy(credits_per_rank=1, request_timeout_s=float("nan"), outage_timeout_s=1.0)
