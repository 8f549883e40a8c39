"""Dynamic batching: version-pure batches up to max_batch, expired requests set aside."""

from __future__ import annotations

import pytest

from mpi_workers.batcher import Pending, plan


def p(rid: int, frames: int, version: str = "v1", deadline: float | None = None) -> Pending:
    return Pending(b"id", rid, frames, version, deadline)


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
