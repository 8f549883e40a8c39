"""Errors of the launcher: reservations that do not fit, ranks that die."""

from __future__ import annotations

from framestream.errors import DeadlineExceeded, FramestreamError


class GangReservationTimeout(DeadlineExceeded):
    """A gang of bundles could not be reserved in time. Says what was asked and what was free."""

    def __init__(self, bundles: list[dict[str, float]], strategy: str, seconds: float,
                 free: dict[str, float], setting: str = "--timeout", *, detail: str = "",
                 attempts: int = 1) -> None:
        asked = _sum(bundles)
        free_main = {k: v for k, v in free.items() if "_group_" not in k and not k.startswith("node:")
                     and k not in ("memory", "object_store_memory")}
        detail = detail or (f"asked: {len(bundles)} bundles {bundles} ({strategy}), {asked} in all; "
                            f"free in the cluster: {free_main or 'nothing'}. Ask for fewer ranks or "
                            f"resources per rank, add nodes, or raise {setting}.")
        super().__init__("gang reservation", f"a placement group of {len(bundles)} bundles",
                         seconds, setting, detail)
        self.bundles = bundles
        self.free = free
        self.attempts = attempts


class RankFailed(FramestreamError):
    """An MPI job ended with a failure. Carries rank, host, pid, exit code and stderr tail."""

    exit_status = 3  # an entry point ended by it: the ranks failed (framestream/exits.py)

    def __init__(self, exit_code: int, stderr_tail: str, rank: int | None = None,
                 host: str | None = None, pid: int | None = None) -> None:
        who = f"rank {rank}" if rank is not None else "an MPI rank"
        where = f" on {host}" if host else ""
        pid_s = f" (pid {pid})" if pid else ""
        super().__init__(f"{who}{where}{pid_s} failed with exit code {exit_code}\n"
                         f"--- stderr tail:\n{stderr_tail}")
        self.exit_code, self.stderr_tail = exit_code, stderr_tail
        self.rank, self.host, self.pid = rank, host, pid


def _sum(bundles: list[dict[str, float]]) -> dict[str, float]:
    total: dict[str, float] = {}
    for b in bundles:
        for k, v in b.items():
            total[k] = total.get(k, 0.0) + v
    return total
