"""Chaos: a bad promotion followed by ``kill -9`` of a serving rank.

While the stream runs from a registry, serving.json is pointed at a version whose weights fail
their checksum (a tool that skipped the check, or storage that rotted after promotion); once the
driver has refused it, one serving rank is killed with SIGKILL, so the launcher relaunches the
gang. The relaunched ranks must start on the last good version (not abort on the bad one and use
up the restarts), count the fallback, and the stream goes on: every frame answered, conservation
holds, the bad version never answers.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import time
import urllib.request
from pathlib import Path

import pytest

from models.registry import Registry
from tests.chaos.harness import ChaosStream, Profile, alive, assert_conserved, record
from tests.helpers.registry import corrupt_weights, publish_random
from tests.stream.helpers import wait_until

pytestmark = [pytest.mark.chaos, pytest.mark.spark, pytest.mark.kafka, pytest.mark.mpi,
              pytest.mark.slow]


def _fallbacks(run: ChaosStream) -> dict[int, tuple[str, float]]:
    """rank -> (default version in framestream_rank_model_info, checksum fallbacks counted)."""
    found = {}
    for r in run.ranks():
        text = urllib.request.urlopen(r["metrics"], timeout=10).read().decode()
        version = re.search(r'framestream_rank_model_info\{[^}]*version="([^"]+)"', text)
        count = re.search(r'framestream_rank_model_fallbacks_total\{[^}]*'
                          r'reason="checksum_mismatch"[^}]*\} ([0-9.]+)', text)
        found[int(r["rank"])] = (version.group(1) if version else "",
                                 float(count.group(1)) if count else -1.0)
    return found


def test_bad_promotion_then_a_rank_killed(kafka_bootstrap: str, topics: dict[str, str],
                                          tmp_path: Path, prof: Profile) -> None:
    registry = Registry(tmp_path / "registry")
    v1 = publish_random(registry, 1)
    assert registry.promote(v1).promoted
    v2 = publish_random(registry, 2, v1)
    run = ChaosStream(kafka_bootstrap, topics, tmp_path, dataclasses.replace(
        prof, frames=max(prof.frames, 2500)), model=("--registry", str(registry.root)))
    run.start()
    try:
        run.produce()
        run.settle()
        corrupt_weights(registry, v2)
        serving = registry.root / "serving.json"
        state = json.loads(serving.read_text())
        run.fault_start()
        serving.write_text(json.dumps({"version": v2, "updated": "chaos",  # as a promotion would
                                       "history": [*state["history"], {"version": v2}]}))
        log = run.logs[-1]
        wait_until(lambda: f"refusing to serve {v2}" in log.read_text(errors="replace"), 60,
                   "the driver to refuse the bad version")
        victim = run.ranks()[1]["pid"]
        killed = time.time()
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: run.generation() >= 2, 120, "the relaunched ranks")
        relaunched = time.time() - killed
        published = json.loads(run.endpoints.read_text())
        assert published["model_version"] == v1, published
        started = _fallbacks(run)
        assert started == {0: (v1, 1.0), 1: (v1, 1.0)}, started
        run.fault_end()
        b = run.finish()
    finally:
        code = run.stop()
    assert code == 0, run.log_tail()
    assert not alive([victim])
    assert_conserved(b, run.total)
    assert v2 not in b.versions and b.versions.get(v1, 0) == b.predictions, b.versions
    assert run.stats()["rank_restarts"] == 1, run.stats()
    record("bad_promotion_relaunch", "serving.json names a version whose weights fail their "
           "checksum, then kill -9 one of 2 serving ranks", prof, b,
           relaunch_s=round(relaunched, 3), refused_after_s=round(killed - run.t0, 3), restarts=1,
           fallbacks_counted=int(sum(c for _, c in started.values())))
