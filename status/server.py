"""Run the status service on uvicorn in a thread: from ``python -m status`` or the stream driver."""

from __future__ import annotations

import logging
import threading
import time

import uvicorn

from framestream.config import KafkaSettings
from framestream.errors import DeadlineExceeded
from status.app import create_app
from status.collector import Collector
from status.settings import StatusSettings

log = logging.getLogger(__name__)


class StatusServer:
    """``start()`` returns once the socket listens (``url`` is set); ``stop()`` ends the
    threads."""

    def __init__(self, settings: StatusSettings, kafka: KafkaSettings) -> None:
        settings.check_bind()
        self.settings = settings
        self.collector = Collector(settings, kafka)
        config = uvicorn.Config(create_app(self.collector), host=settings.host,
                                port=settings.port, log_level="warning", lifespan="off",
                                access_log=False, timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, name="status-http", daemon=True)
        self.url = ""

    def start(self, timeout: float = 15.0) -> "StatusServer":
        self.collector.start()
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive():
                self.collector.stop()
                raise OSError(f"the status page could not listen on {self.settings.host}:"
                              f"{self.settings.port} (port taken? set FRAMESTREAM_STATUS_PORT "
                              f"or --status-port)")
            if time.monotonic() > deadline:
                self.stop()
                raise DeadlineExceeded("status server", "its socket to listen", timeout)
            time.sleep(0.05)  # uvicorn sets `started` from its own thread; bounded above
        port = self.server.servers[0].sockets[0].getsockname()[1]
        host = self.settings.host
        self.url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
        log.info("status page at %s", self.url)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.collector.stop(timeout)
        self.server.should_exit = True
        self._thread.join(timeout)

    def __enter__(self) -> "StatusServer":
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
