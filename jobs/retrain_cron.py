"""Entry point: scheduled retraining. Not built yet (issue #5); it fails plainly instead of pretending."""

from __future__ import annotations

import sys


def main() -> int:
    print("jobs/retrain_cron.py (scheduled retraining) is not built yet: see issue #5", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
