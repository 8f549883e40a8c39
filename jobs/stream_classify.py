"""``spark-submit jobs/stream_classify.py``: classify every frame on Kafka, forever (or once).

    spark-submit jobs/stream_classify.py --ranks 2                 # launch 2 ranks with mpirun
    spark-submit jobs/stream_classify.py --endpoints FILE          # attach to running ranks
    spark-submit jobs/stream_classify.py --ranks 2 --endpoints F   # launch, publish at F
    spark-submit jobs/stream_classify.py --ranks 2 --available-now # what is there now, then stop
    spark-submit jobs/stream_classify.py --ranks 2 --status-port 8765  # + the live status page

Every frame on ``frames`` becomes a JSON prediction on ``predictions`` or a dead letter on
``frames.dlq``. Flags override FRAMESTREAM_* settings (see ``--help``). With ``--ranks N`` the
ranks are reserved as a gang on Ray and supervised by the launcher: which cluster is
FRAMESTREAM_RAY_ADDRESS (default: a private local instance), the gang's shape is
FRAMESTREAM_LAUNCHER_* (CPUS_PER_RANK, GPUS_PER_RANK, STRATEGY, TIMEOUT_S, RETRIES, RESTARTS).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from etl.client import ClientSettings
from etl.driver import StreamJob, check_attach
from etl.stream import StreamSettings
from framestream.config import KafkaSettings
from framestream.exits import entry_point
from framestream.flags import add_settings, as_argv, from_args, given
from framestream.logs import setup_logging
from jobs.serving import start_serving_gang
from mpi_workers.serve import ServeSettings

if TYPE_CHECKING:
    from status.settings import StatusSettings


def parse(argv: list[str] | None) -> "tuple[StreamJob, StatusSettings | None]":
    from status.settings import StatusSettings

    p = argparse.ArgumentParser(prog="spark-submit jobs/stream_classify.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ranks", type=int, default=0, help="launch N ranks (mpirun) and supervise")
    add_settings(p, StreamSettings, "endpoints_file", "registry", "version", "starting_offsets",
                 "max_offsets_per_trigger", "checkpoint", "trigger_s", "topk",
                 aliases={"endpoints_file": "--endpoints", "trigger_s": "--trigger-interval"},
                 helps={"endpoints_file": "the ranks' endpoint file: attach to it, or with "
                                          "--ranks where the launched ranks publish"})
    add_settings(p, KafkaSettings, "bootstrap", "frames_topic", "predictions_topic", "dlq_topic",
                 aliases={"frames_topic": "--topic"})
    add_settings(p, ClientSettings, "chunk_frames", "credits_per_rank", "request_timeout_s",
                 aliases={"credits_per_rank": "--credits",
                          "request_timeout_s": "--request-timeout"})
    p.add_argument("--available-now", action="store_true",
                   help="process what is on the topic now, then stop")
    ranks = p.add_argument_group("the ranks launched with --ranks (python -m mpi_workers.serve)")
    add_settings(ranks, ServeSettings, "max_batch", "threads", prefix="rank-",
                 aliases={"max_batch": "--max-batch"})
    page = p.add_argument_group("the live status page, served when --status-port is given")
    add_settings(page, StatusSettings, "port", "host", "allow_remote", prefix="status-",
                 helps={"port": "serve the live status page on this TCP port (0 = any free); "
                                "the page is off unless this flag is given"})
    p.add_argument("--ready-file", default="", help="write a JSON line here once the query runs")
    p.add_argument("--log-level", default=None,
                   help="framestream's and Spark's log level (default: framestream INFO, "
                        "Spark WARN; FRAMESTREAM_LOG_LEVEL, FRAMESTREAM_SPARK_LOG_LEVEL)")
    a = p.parse_args(argv)
    setup_logging(a.log_level)
    stream = from_args(a, StreamSettings)
    if given(a, StreamSettings).get("endpoints_file") is None and a.ranks == 0:
        p.error("say where the ranks are: --ranks N to launch them, or --endpoints FILE to attach "
                "to running ones")
    if "endpoints_file" in given(a, StreamSettings) and not a.ranks:
        check_attach(stream)
    kafka = from_args(a, KafkaSettings)
    client = from_args(a, ClientSettings)
    serve_args = as_argv(ServeSettings, given(a, ServeSettings))
    job = StreamJob(stream, kafka, client, a.ranks, serve_args, a.available_now, a.ready_file,
                    start_ranks=start_serving_gang, spark_log_level=a.log_level)
    status = None
    if "port" in given(a, StatusSettings):
        from etl.pins import is_uri

        status = from_args(a, StatusSettings,
                           registry=Path(stream.registry) if stream.registry else None,
                           endpoints_file=Path(stream.endpoints_file),
                           checkpoint=(None if is_uri(stream.checkpoint)
                                       else Path(stream.checkpoint)))
        status.check_bind()  # before anything starts
    return job, status


@entry_point
def main(argv: list[str] | None = None) -> int:
    job, status = parse(argv)
    if status is None:
        return job.run()
    from status.server import StatusServer

    with StatusServer(status, job.kafka) as server:  # in this process, in threads
        print(f"status page: {server.url}", flush=True)
        return job.run()


if __name__ == "__main__":
    sys.exit(main())
