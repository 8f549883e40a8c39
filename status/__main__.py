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
from pathlib import Path

from framestream.config import KafkaSettings
from framestream.errors import FramestreamError
from framestream.logs import setup_logging
from status.server import StatusServer
from status.settings import StatusSettings


def parse(argv: list[str] | None) -> tuple[StatusSettings, KafkaSettings]:
    p = argparse.ArgumentParser(prog="python -m status", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bootstrap", help="Kafka bootstrap servers")
    p.add_argument("--topic", help="frames topic")
    p.add_argument("--predictions-topic")
    p.add_argument("--dlq-topic")
    p.add_argument("--registry", type=Path, help="model registry root (default <state>/registry)")
    p.add_argument("--state", type=Path, help="state folder: retrain/runs.jsonl, endpoints.json")
    p.add_argument("--endpoints", type=Path, help="the ranks' endpoint file")
    p.add_argument("--checkpoint", type=Path, help="the stream's checkpoint folder (each "
                   "micro-batch's pinned model version; default <state>/checkpoints/stream)")
    p.add_argument("--host", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="TCP port (default 8765; 0 = any free)")
    p.add_argument("--allow-remote", action="store_true", default=None,
                   help="allow a non-loopback --host (the page has no login)")
    p.add_argument("--spark-ui", help="link to Spark's UI (default: the one a stream driver of "
                                      "--topic announced in <state>/ui/)")
    p.add_argument("--ray-dashboard", help="link to Ray's dashboard (default: the one Ray reported "
                                           "to a launcher, <state>/gangs/)")
    p.add_argument("--refresh", type=float, help="seconds between updates (default 1)")
    p.add_argument("--log-level", default=None)
    a = p.parse_args(argv)
    setup_logging(a.log_level)
    status = StatusSettings.load(host=a.host, port=a.port, allow_remote=a.allow_remote,
                                 state=a.state, registry=a.registry, endpoints_file=a.endpoints,
                                 checkpoint=a.checkpoint,
                                 refresh_s=a.refresh, spark_ui=a.spark_ui,
                                 ray_dashboard=a.ray_dashboard)
    kafka = KafkaSettings.load(bootstrap=a.bootstrap, frames_topic=a.topic,
                               predictions_topic=a.predictions_topic, dlq_topic=a.dlq_topic)
    return status, kafka


def main(argv: list[str] | None = None) -> int:
    try:
        status, kafka = parse(argv)
        server = StatusServer(status, kafka).start()
    except (FramestreamError, ValueError, OSError) as exc:  # ConfigError names the setting
        print(f"error: {exc}", file=sys.stderr)
        return 2
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    print(f"status page: {server.url}", flush=True)
    done.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
