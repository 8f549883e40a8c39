"""Entry point: data-parallel retraining under mpirun. Not built yet (issue #5); it fails plainly instead of pretending."""

from __future__ import annotations

import sys


def main() -> int:
    print("jobs/retrain.py (data-parallel retraining under mpirun) is not built yet: see issue #5", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
