"""``python -m jobs.settings_doc``: the README's settings and exit-code tables, from the code.

    python -m jobs.settings_doc --write README.md     # rewrite the generated blocks
    python -m jobs.settings_doc --check README.md     # exit 1 when they are out of date
    python -m jobs.settings_doc                       # print the settings block

Every settings section of framestream is imported here (jobs/ sits above every role), in the
order the README lists them; ``tests/unit/test_settings_doc.py`` checks that none is missing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from etl.client import ClientSettings
from etl.session import SparkSettings
from etl.stream import StreamSettings
from framestream.config import BrokerSettings, KafkaSettings
from framestream.exits import NOT_DONE, OK, entry_point
from framestream.limits import FrameLimits
from framestream.producer import ProducerSettings
from framestream.security import KeySettings
from framestream.settings import Section
from framestream.settings_doc import FIX, render, settings_block
from jobs.retrain_cron import CronSettings
from launcher.ray_cluster import RaySettings
from launcher.settings import LauncherSettings
from models.registry import RegistrySettings
from mpi_workers.serve import ServeSettings
from mpi_workers.train_settings import TrainSettings
from status.settings import StatusSettings

SECTIONS: tuple[type[Section], ...] = (
    KafkaSettings, ProducerSettings, FrameLimits, StreamSettings, ClientSettings, SparkSettings,
    ServeSettings, KeySettings, RegistrySettings, TrainSettings, CronSettings, LauncherSettings,
    RaySettings, StatusSettings, BrokerSettings)


@entry_point
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jobs.settings_doc", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--write", type=Path, metavar="README", help="rewrite its generated blocks")
    mode.add_argument("--check", type=Path, metavar="README", help="exit 1 when they differ")
    a = p.parse_args(argv)
    if a.write is None and a.check is None:
        print(settings_block(SECTIONS))
        return OK
    path = a.write or a.check
    text = path.read_text()
    new = render(text, SECTIONS)
    if a.check is not None:
        if new != text:
            print(f"{path}: the settings or exit-code table is out of date: run `{FIX}`",
                  file=sys.stderr)
            return NOT_DONE
        return OK
    if new != text:
        path.write_text(new)
    return OK


if __name__ == "__main__":
    sys.exit(main())
