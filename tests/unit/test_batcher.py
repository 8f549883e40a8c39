"""Dynamic batching: version-pure batches up to max_batch, expired requests set aside."""

from __future__ import annotations

import pytest

from mpi_workers.batcher import Pending, late, plan, withdraw


def p(rid: int, frames: int, version: str = "v1", deadline: float | None = None,
      peer: bytes = b"id") -> Pending:
    return Pending(peer, rid, frames, version, deadline)


def ids(batches: list[list[Pending]]) -> list[list[int]]:
    return [[q.request_id for q in b] for b in batches]


def test_coalesces_up_to_max_batch_in_arrival_order() -> None:
    out = plan([p(1, 100), p(2, 100), p(3, 100), p(4, 50)], max_batch=256, now=0)
    assert ids(out.batches) == [[1, 2], [3, 4]]
    assert all(sum(q.frames for q in b) <= 256 for b in out.batches)


def test_never_mixes_model_versions() -> None:
    out = plan([p(1, 10, "v1"), p(2, 10, "v2"), p(3, 10, "v1")], max_batch=256, now=0)
    assert sorted(ids(out.batches)) == [[1, 3], [2]]
    assert all(len({q.version for q in b}) == 1 for b in out.batches)


def test_oversized_request_is_a_batch_of_its_own() -> None:
    out = plan([p(1, 10), p(2, 1000), p(3, 10)], max_batch=256, now=0)
    assert ids(out.batches) == [[2], [1, 3]]


def test_expired_requests_are_set_aside() -> None:
    out = plan([p(1, 10, deadline=5.0), p(2, 10, deadline=20.0), p(3, 10)], max_batch=256, now=10.0)
    assert [q.request_id for q in out.expired] == [1]
    assert ids(out.batches) == [[2, 3]]


def test_bad_max_batch() -> None:
    with pytest.raises(ValueError):
        plan([], max_batch=0, now=0)


def test_a_request_id_sent_again_by_the_same_peer_is_computed_once() -> None:
    first, again, other_peer = p(1, 10, deadline=5.0), p(1, 10, deadline=9.0), p(1, 10, peer=b"B")
    out = plan([first, p(2, 10), again, other_peer], max_batch=256, now=1.0)
    assert out.superseded == [first]  # the later copy (fresh ttl) stands in for it
    assert [[(q.request_id, q.deadline, q.ident) for q in b] for b in out.batches] == \
        [[(2, None, b"id"), (1, 9.0, b"id"), (1, None, b"B")]]  # another peer's id 1 is its own


def test_withdraw_takes_only_that_peers_request() -> None:
    pending = [p(1, 10), p(1, 10, peer=b"B"), p(2, 10)]
    assert withdraw(pending, b"id", 1) == 1
    assert [(q.request_id, q.ident) for q in pending] == [(1, b"B"), (2, b"id")]
    assert withdraw(pending, b"id", 1) == 0


def test_late_splits_a_batch_at_now_exactly() -> None:
    ok, missed = late([p(1, 1, deadline=2.0), p(2, 1), p(3, 1, deadline=3.0)], now=2.0)
    assert [q.request_id for q in ok] == [2, 3] and [q.request_id for q in missed] == [1]
