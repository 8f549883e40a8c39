"""Real Ray: a gang that fits is reserved; one that cannot fit times out, is removed, says why."""

from __future__ import annotations

import pytest

from launcher.errors import GangReservationTimeout
from launcher.placement import release, reserve

pytestmark = pytest.mark.ray


def _free_cpus() -> float:
    import ray

    return ray.available_resources().get("CPU", 0.0)


def test_two_bundle_gang_is_reserved_then_released(ray_local) -> None:
    from ray.util import placement_group_table

    assert _free_cpus() == 2.0
    pg = reserve([{"CPU": 1}, {"CPU": 1}], "PACK", timeout=30)
    assert placement_group_table(pg)["state"] == "CREATED"
    assert _free_cpus() == 0.0
    release(pg)
    assert placement_group_table(pg)["state"] == "REMOVED"


def test_gang_that_cannot_fit_times_out_and_is_removed(ray_local) -> None:
    from ray.util import placement_group_table

    with pytest.raises(GangReservationTimeout) as err:
        reserve([{"CPU": 2}, {"CPU": 2}], "PACK", timeout=2)
    message = str(err.value)
    assert "2 bundles" in message and "'CPU': 4.0" in message  # what was asked
    assert "free in the cluster" in message and "--timeout" in message  # what was free, what to do
    assert all(t["state"] == "REMOVED" for t in placement_group_table().values())
