"""One snapshot of everything the page shows, rebuilt every ``refresh_s`` by one thread (so many
open pages cost one set of scrapes and file reads, not one each)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from framestream.config import KafkaSettings
from status.files import RankWatch, pins_view, registry_view, runs_view
from status.links import LinkWatch
from status.settings import StatusSettings
from status.stream_tail import StreamTail

log = logging.getLogger(__name__)


class Collector:
    def __init__(self, settings: StatusSettings, kafka: KafkaSettings) -> None:
        self.settings = settings
        self.tail = StreamTail(kafka, settings.refresh_s, settings.latency_window)
        self.ranks = RankWatch(settings.endpoints_path, settings.scrape_timeout_s)
        self.links = LinkWatch(settings.state, kafka.frames_topic, settings.spark_ui,
                               settings.ray_dashboard, settings.scrape_timeout_s,
                               settings.link_check_s)
        self.latest: dict[str, Any] = {}
        self.seq = 0
        self.stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="status-collect", daemon=True)

    def start(self) -> "Collector":
        self.tail.start()
        self.refresh()
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.stopped.set()
        self._thread.join(timeout)
        self.tail.stop(timeout)

    def refresh(self) -> dict[str, Any]:
        s = self.settings
        snap = {"t": time.time(), "stream": self.tail.snapshot(),
                "ranks": self.ranks.view(time.monotonic()),
                "registry": registry_view(s.registry_root),
                "runs": runs_view(s.runs_log, s.registry_root),
                "pins": pins_view(s.pins_dir),
                "links": self.links.view(time.monotonic())}
        self.latest, self.seq = snap, self.seq + 1
        return snap

    def _run(self) -> None:
        while not self.stopped.wait(self.settings.refresh_s):
            try:
                self.refresh()
            except Exception:  # the page outlives one bad read; the next tick tries again
                log.exception("status: refresh failed")
