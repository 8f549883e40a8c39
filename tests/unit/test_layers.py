"""The layers of pyproject.toml's [tool.importlinter] hold: lint-imports (the venv's) passes, so a
new import cycle, a role importing another role, or product code importing stack/, bench/ or
tests/ fails `make test` the day it appears."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_import_layers_hold() -> None:
    lint = Path(sys.executable).parent / "lint-imports"
    assert lint.exists(), f"{lint} missing: run `make setup` (installs import-linter, a dev pin)"
    proc = subprocess.run([str(lint), "--no-cache"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout, proc.stdout[-2000:]
