"""Logging set-up for entry points. Library modules only ever call ``logging.getLogger(__name__)``;
the ``jobs/`` entry points call :func:`setup_logging` once."""

from __future__ import annotations

import logging
import os


def setup_logging(level: str | None = None) -> None:
    level = (level or os.environ.get("FRAMESTREAM_LOG_LEVEL", "INFO")).upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    for noisy in ("kafka", "py4j", "urllib3", "matplotlib"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
