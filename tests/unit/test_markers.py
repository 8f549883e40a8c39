"""Every test module that starts Ray (a stream with --ranks, the cron, a launcher, a Ray fixture)
is marked ``ray``, so ``-m "not ray"`` really skips Ray (issue 15: some were not marked)."""

from __future__ import annotations

import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
#: what starts Ray in a test module: the stream's own gang, the launcher, the cron, Ray fixtures
STARTS_RAY = re.compile(r'"--ranks",\s*(str\(|"[1-9])|Launcher\(|ray_local|loopback_ray|'
                        r'retrain_cron|ray\.init\(|start_serving_gang')
#: modules that only parse flags or plan reservations without Ray, with the reason
NOT_RAY = {"unit/test_settings_flags.py": "parses --ranks; never starts the job",
           "unit/test_reservation_policy.py": "plans bundles on made-up nodes",
           "unit/test_cron.py": "the scheduler's pure parts and its flag checks, no run",
           "unit/test_settings_exits.py": "names entry points; starts none",
           "unit/test_markers.py": "this file"}


def test_modules_that_start_ray_are_marked_ray() -> None:
    unmarked = []
    for path in sorted(TESTS.rglob("test_*.py")):
        rel = path.relative_to(TESTS).as_posix()
        text = path.read_text()
        if rel in NOT_RAY or not STARTS_RAY.search(text):
            continue
        if "pytest.mark.ray" not in text:
            unmarked.append(rel)
    assert not unmarked, f"these start Ray but are not marked ray: {unmarked}"
