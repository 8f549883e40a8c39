"""Entry point: publish frames to Kafka. Not built yet (issue #4); it fails plainly instead of pretending."""

from __future__ import annotations

import sys


def main() -> int:
    print("jobs/produce.py (publish frames to Kafka) is not built yet: see issue #4", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
