"""The README's settings and exit-code tables are the generator's, and every setting a message or
document names exists."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from framestream.errors import DeadlineExceeded
from framestream.paths import REPO
from framestream.settings import SECTIONS as DECLARED
from framestream.settings_doc import FIX, render
from jobs.settings_doc import SECTIONS

PRODUCT = ("framestream", "etl", "mpi_workers", "launcher", "models", "jobs", "status", "stack",
           "bench", "scripts")

#: FRAMESTREAM_* environment variables that are not settings, each with its reason.
NOT_SETTINGS = {
    "FRAMESTREAM_STATE": "the state folder every default path hangs from (framestream/paths.py)",
    "FRAMESTREAM_CACHE": "the install cache of scripts/setup.sh (venv, jars, wheels)",
    "FRAMESTREAM_FASHION_MNIST_DIR": "where the Fashion-MNIST IDX files are (framestream/paths.py)",
    "FRAMESTREAM_LOG_LEVEL": "logging level of every process, read before any setting is loaded",
    "FRAMESTREAM_CONTROL_TOKEN": "a secret per gang the launcher exports to its ranks alone",
    "FRAMESTREAM_GANG_BUNDLE": "launcher -> rank environment: the rank's bundle",
    "FRAMESTREAM_GANG_NODE_IP": "launcher -> rank environment: the node's address",
    "FRAMESTREAM_GANG_RANK_ENV": "launcher -> rank environment: per-rank variables",
    "FRAMESTREAM_RUN_DIR": "launcher -> rank environment: the launch's result/error files folder",
    "FRAMESTREAM_MPI_RENDEZVOUS_HOST": "launcher -> rank environment: torch.distributed rendezvous",
    "FRAMESTREAM_HOROVOD": "scripts/setup.sh: 0 skips building Horovod",
    "FRAMESTREAM_PYTHON": "scripts/setup.sh: the Python to build the venv with",
    "FRAMESTREAM_SETUP_RAY_DASHBOARD": "scripts/setup.sh: 1 installs Ray's dashboard (opt-in)",
    "FRAMESTREAM_CHAOS_PROFILE": "Makefile/tests: short or long chaos profile",
    "FRAMESTREAM_FUZZ_SECONDS": "Makefile/tests: seconds per fuzz target",
}

NAME = re.compile(r"FRAMESTREAM_[A-Z0-9_]*")


def _settings() -> set[str]:
    return {cls.env(name) for cls in SECTIONS for name in cls.model_fields}


def unknown_names(text: str) -> set[str]:
    """FRAMESTREAM_* names in ``text`` that are neither a setting (or a prefix of settings, as in
    ``FRAMESTREAM_KAFKA_*``) nor an allowed non-setting."""
    names = _settings()
    bad = set()
    for found in NAME.findall(text):
        if found in names or found in NOT_SETTINGS:
            continue
        if found.endswith("_") and any(n.startswith(found) for n in names):
            continue
        bad.add(found)
    return bad


def test_readme_tables_are_generated() -> None:
    readme = (REPO / "README.md").read_text()
    assert render(readme, SECTIONS) == readme, (
        f"README.md's settings or exit-code table is not what the code declares: run `{FIX}`")


def test_every_section_is_in_the_table() -> None:
    declared = set()
    for folder in PRODUCT:
        for path in (REPO / folder).rglob("*.py"):
            declared |= set(re.findall(r"^class (\w+)\(Section\):", path.read_text(), re.M))
    listed = {cls.__name__ for cls in SECTIONS}
    assert declared == listed, f"add {declared - listed} to jobs/settings_doc.py SECTIONS"
    assert set(DECLARED.values()) >= set(SECTIONS)


def test_every_named_setting_exists() -> None:
    files = [REPO / "README.md", REPO / "Makefile"]
    for folder in PRODUCT:
        files += [p for p in (REPO / folder).rglob("*") if p.suffix in (".py", ".sh", ".md")]
    bad = {}
    for path in files:
        names = unknown_names(path.read_text(errors="replace"))
        if names:
            bad[str(path.relative_to(REPO))] = sorted(names)
    assert not bad, f"these name settings that do not exist (see README's settings table): {bad}"


def test_the_scan_catches_a_misspelt_setting() -> None:
    assert unknown_names("raise FRAMESTREAM_FEED_MAX_FRAMES") == {"FRAMESTREAM_FEED_MAX_FRAMES"}
    assert unknown_names("FRAMESTREAM_TRAIN_FEED_MAX_FRAMES and FRAMESTREAM_KAFKA_*") == set()


def test_a_launch_timeout_names_the_launchers_setting(tmp_path: Path) -> None:
    """ServingGang's publication wait is FRAMESTREAM_LAUNCHER_LAUNCH_TIMEOUT_S unless its caller
    (the stream job) says which of its settings it passed."""
    from launcher.gang import ServingGang

    class NeverPublishes:  # the spawn seam: ranks that start and never publish
        layout = SimpleNamespace(ranks=1)

        def command(self, module: str, args: object = (), **_: object) -> list[str]:
            return [sys.executable, "-c", "import time; time.sleep(60)"]

        def env(self, extra: object = None) -> dict[str, str]:
            return dict(os.environ)

    gang = ServingGang(1, [], tmp_path / "endpoints.json", tmp_path / "logs", start_timeout_s=0.3,
                       launch=NeverPublishes())  # type: ignore[arg-type]
    with pytest.raises(DeadlineExceeded) as err:
        gang.start()
    assert err.value.setting == "FRAMESTREAM_LAUNCHER_LAUNCH_TIMEOUT_S"
    assert "FRAMESTREAM_LAUNCHER_LAUNCH_TIMEOUT_S" in str(err.value)
