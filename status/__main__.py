"""``python -m status --bootstrap HOST:PORT --registry DIR --state DIR [--port N]``

Serves framestream's live status page (default http://127.0.0.1:8765/) until Ctrl-C or SIGTERM.
Flags override ``FRAMESTREAM_STATUS_*`` / ``FRAMESTREAM_KAFKA_*`` settings; Kafka security
options (SASL, TLS) come from ``FRAMESTREAM_KAFKA_*`` as for every other client.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from framestream.config import KafkaSettings
from framestream.exits import OK, entry_point
from framestream.flags import add_settings, from_args
from framestream.logs import setup_logging
from status.server import StatusServer
from status.settings import StatusSettings


def parse(argv: list[str] | None) -> tuple[StatusSettings, KafkaSettings]:
    p = argparse.ArgumentParser(prog="python -m status", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_settings(p, KafkaSettings, "bootstrap", "frames_topic", "predictions_topic", "dlq_topic",
                 aliases={"frames_topic": "--topic"})
    add_settings(p, StatusSettings, "registry", "state", "endpoints_file", "checkpoint", "host",
                 "port", "allow_remote", "spark_ui", "ray_dashboard", "refresh_s",
                 aliases={"endpoints_file": "--endpoints", "refresh_s": "--refresh"})
    p.add_argument("--log-level", default=None)
    a = p.parse_args(argv)
    setup_logging(a.log_level)
    status = from_args(a, StatusSettings)
    kafka = from_args(a, KafkaSettings)
    return status, kafka


@entry_point
def main(argv: list[str] | None = None) -> int:
    status, kafka = parse(argv)
    server = StatusServer(status, kafka).start()
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    print(f"status page: {server.url}", flush=True)
    done.wait()
    server.stop()
    return OK


if __name__ == "__main__":
    sys.exit(main())
