"""Reserve a gang of bundles with a Ray placement group: all of it within a deadline, or nothing.

This is the Ray-facing half of gang reservation; the retry/backoff policy around it is the
launcher's state machine. Every wait has a deadline; a timed-out group is removed before the
error is raised, so nothing stays reserved.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from framestream.errors import DeadlineExceeded
from launcher.errors import GangReservationTimeout
from launcher.settings import STRATEGIES

if TYPE_CHECKING:
    from ray.util.placement_group import PlacementGroup

log = logging.getLogger(__name__)

__all__ = ["STRATEGIES", "release", "reserve"]


def reserve(bundles: Sequence[dict[str, float]], strategy: str = "PACK", timeout: float = 30.0,
            name: str = "", timeout_setting: str = "--timeout") -> "PlacementGroup":
    """Create a placement group and wait until every bundle is reserved.

    Raises GangReservationTimeout (after removing the group) when it is not ready in ``timeout``.
    """
    import ray
    from ray.util.placement_group import placement_group

    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    bundles = [dict(b) for b in bundles]
    started = time.monotonic()
    pg = placement_group(bundles, strategy=strategy, name=name)
    if pg.wait(timeout_seconds=timeout):
        log.info("reserved %d bundles (%s) in %.2fs", len(bundles), strategy,
                 time.monotonic() - started)
        return pg
    free = ray.available_resources()
    release(pg)
    raise GangReservationTimeout(bundles, strategy, timeout, free, timeout_setting)


def release(pg: "PlacementGroup", timeout: float = 30.0) -> None:
    """Remove a placement group and wait until Ray reports it removed."""
    from ray.util import placement_group_table
    from ray.util.placement_group import remove_placement_group

    remove_placement_group(pg)
    deadline = time.monotonic() + timeout
    while placement_group_table(pg).get("state") != "REMOVED":
        if time.monotonic() > deadline:
            raise DeadlineExceeded("release", f"placement group {pg.id.hex()} to be removed", timeout)
        time.sleep(0.05)  # Ray removes groups asynchronously; poll its table until the deadline
