"""The errors of the Spark side (executors and driver); each carries its exit code through
:class:`framestream.errors.FramestreamError` (see :mod:`framestream.exits`)."""

from __future__ import annotations

from framestream.errors import DeadlineExceeded, FramestreamError


class RanksUnavailable(DeadlineExceeded):
    """No rank answered and no new generation was published in time."""


class RankError(FramestreamError):
    """A rank refused a request for a reason a retry cannot fix (bad shape, unknown model)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"rank refused the request: {code}: {detail}")
        self.code = code
