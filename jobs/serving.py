"""Serving ranks for the stream driver: a gang reserved on Ray, mpirun started on it.

The stream driver (:class:`etl.driver.StreamJob`) runs in Spark's role and does not know how ranks
are started; this entry-point module composes it with the launcher.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from framestream.paths import state_dir

if TYPE_CHECKING:
    from etl.driver import StreamJob

log = logging.getLogger(__name__)


def start_serving_gang(job: "StreamJob", cancel: threading.Event) -> tuple[Any, Any]:
    """Reserve ``job.ranks`` bundles on Ray (FRAMESTREAM_RAY_ADDRESS, FRAMESTREAM_LAUNCHER_*),
    start the serving ranks on them and wait until they publish; returns (launcher, gang).
    ``cancel`` (a signal) also ends a reservation still waiting for its gang."""
    from etl.stream import StreamSettings
    from launcher.api import Launcher
    from launcher.settings import LauncherSettings

    args = list(job.serve_args)
    if job.stream.registry:
        args += ["--registry", job.stream.registry]
    if job.stream.version:
        args += ["--version", job.stream.version]
    launcher = Launcher("stream", LauncherSettings.load(ranks=job.ranks), cancel=cancel)
    try:
        launcher.acquire()
        gang = launcher.serve(args, Path(job.stream.endpoints_file), state_dir() / "logs",
                              start_timeout_s=job.stream.endpoints_timeout_s,
                              start_timeout_setting=StreamSettings.env("endpoints_timeout_s"))
    except BaseException:
        launcher.release()
        raise
    log.info("ranks up on gang %s: generation %d", launcher.name, gang.generation)
    return launcher, gang
