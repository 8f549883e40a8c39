"""``spark-submit jobs/retrain_kafka.py --ranks 2 [-- retrain flags]``: retrain on labeled frames
from Kafka, LINE's way.

Launches ``mpirun -n N python jobs/retrain.py --source zmq``; a Spark job reads everything on the
``labels`` topic now (image bytes with the true label in the ``fs-label`` header), decodes and
resizes it with the stream's own ETL on the executors, and pushes training batches over ZeroMQ to
the ranks; then the ranks train data-parallel and rank 0 publishes a registry version (promoted
through the usual gate). Prints rank 0's JSON result with the feed counts.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # spark-submit runs us by path

from etl.feed import run  # noqa: E402
from framestream.config import KafkaSettings  # noqa: E402
from framestream.errors import FramestreamError  # noqa: E402
from framestream.logs import setup_logging  # noqa: E402
from framestream.paths import state_dir  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="spark-submit jobs/retrain_kafka.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ranks", type=int, default=2, help="training ranks (mpirun -n)")
    p.add_argument("--bootstrap", help="Kafka bootstrap servers")
    p.add_argument("--topic", help="labeled frames topic (default: FRAMESTREAM_KAFKA_LABELS_TOPIC)")
    p.add_argument("--work-dir", type=Path, help="logs and the ranks' endpoint file")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds for the whole run")
    p.add_argument("retrain_args", nargs=argparse.REMAINDER,
                   help="after --: flags for jobs/retrain.py (--epochs, --registry, ...)")
    a = p.parse_args(argv)
    setup_logging(None)
    kafka = KafkaSettings.load(bootstrap=a.bootstrap, labels_topic=a.topic)
    work = a.work_dir or state_dir() / "retrain-kafka" / time.strftime("%Y%m%d-%H%M%S")
    extra = [x for x in a.retrain_args if x != "--"]
    try:
        result = run(a.ranks, extra, kafka.bootstrap, kafka.labels_topic, str(work),
                     timeout_s=a.timeout)
    except FramestreamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
