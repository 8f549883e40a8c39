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
    """An MPI job ended with a failure: the first failing rank (rank, host, pid), mpirun's exit
    code, and -- from that rank's error file (:mod:`framestream.run_files`) -- its exception and
    traceback, or the signal that killed it; plus the tail of mpirun's log for humans."""

    exit_status = 3  # an entry point ended by it: the ranks failed (framestream/exits.py)

    def __init__(self, exit_code: int, stderr_tail: str, rank: int | None = None,
                 host: str | None = None, pid: int | None = None, *, message: str = "",
                 callstack: str = "", signal: int | None = None,
                 also_failed: list[int] | None = None) -> None:
        who = f"rank {rank}" if rank is not None else "an MPI rank"
        where = f" on {host}" if host else ""
        pid_s = f" (pid {pid})" if pid else ""
        how = f"was killed by signal {signal}" if signal else f"failed with exit code {exit_code}"
        text = f"{who}{where}{pid_s} {how}"
        if message:
            text += f": {message}"
        if also_failed:
            text += f" (then ranks {also_failed} failed too)"
        if callstack:
            text += f"\n--- traceback of {who}:\n{callstack.rstrip()}"
        super().__init__(f"{text}\n--- mpirun's log tail:\n{stderr_tail}")
        self.exit_code, self.stderr_tail = exit_code, stderr_tail
        self.rank, self.host, self.pid = rank, host, pid
        self.message, self.callstack, self.signal = message, callstack, signal
        self.also_failed = list(also_failed or [])

    @property
    def summary(self) -> str:
        """One line: who failed and why (the exception's own line when a rank wrote one)."""
        return str(self).splitlines()[0]


def _sum(bundles: list[dict[str, float]]) -> dict[str, float]:
    total: dict[str, float] = {}
    for b in bundles:
        for k, v in b.items():
            total[k] = total.get(k, 0.0) + v
    return total
