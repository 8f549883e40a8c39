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
from framestream.errors import FramestreamError
from framestream.logs import setup_logging
from jobs.serving import start_serving_gang

if TYPE_CHECKING:
    from status.settings import StatusSettings


def parse(argv: list[str] | None) -> "tuple[StreamJob, StatusSettings | None]":
    p = argparse.ArgumentParser(prog="spark-submit jobs/stream_classify.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ranks", type=int, default=0, help="launch N ranks (mpirun) and supervise")
    p.add_argument("--endpoints", help="the ranks' endpoint file: attach to it, or with --ranks "
                                       "where the launched ranks publish")
    p.add_argument("--registry", help="model registry root")
    p.add_argument("--version", help="serve this model version instead of the promoted one")
    p.add_argument("--bootstrap", help="Kafka bootstrap servers")
    p.add_argument("--topic", help="frames topic")
    p.add_argument("--predictions-topic")
    p.add_argument("--dlq-topic")
    p.add_argument("--starting-offsets", help="earliest | latest | Spark offsets JSON")
    p.add_argument("--max-offsets-per-trigger", type=int)
    p.add_argument("--checkpoint", help="checkpoint location (offsets, pinned model versions)")
    p.add_argument("--trigger-interval", type=float, help="seconds between micro-batches")
    p.add_argument("--available-now", action="store_true",
                   help="process what is on the topic now, then stop")
    p.add_argument("--topk", type=int)
    p.add_argument("--chunk-frames", type=int, help="frames per request to a rank")
    p.add_argument("--credits", type=int, help="requests in flight per rank")
    p.add_argument("--request-timeout", type=float, help="seconds before a request is re-sent")
    p.add_argument("--max-batch", type=int, help="ranks: frames per forward pass at most")
    p.add_argument("--rank-threads", type=int, help="ranks: torch threads each")
    p.add_argument("--status-port", type=int, default=None,
                   help="serve the live status page on this port (0 = any free; default off)")
    p.add_argument("--status-host", help="status page bind address (default 127.0.0.1)")
    p.add_argument("--status-allow-remote", action="store_true", default=None,
                   help="allow a non-loopback --status-host (the page has no login)")
    p.add_argument("--ready-file", default="", help="write a JSON line here once the query runs")
    p.add_argument("--log-level", default=None,
                   help="framestream's and Spark's log level (default: framestream INFO, "
                        "Spark WARN; FRAMESTREAM_LOG_LEVEL, FRAMESTREAM_SPARK_LOG_LEVEL)")
    a = p.parse_args(argv)
    setup_logging(a.log_level)
    stream = StreamSettings.load(
        checkpoint=a.checkpoint, starting_offsets=a.starting_offsets,
        max_offsets_per_trigger=a.max_offsets_per_trigger, trigger_s=a.trigger_interval,
        topk=a.topk, endpoints_file=a.endpoints, registry=a.registry, version=a.version)
    if a.endpoints is None and a.ranks == 0:
        raise FramestreamError("say where the ranks are: --ranks N to launch them, or "
                               "--endpoints FILE to attach to running ones")
    if a.endpoints and not a.ranks:
        check_attach(stream)
    kafka = KafkaSettings.load(bootstrap=a.bootstrap, frames_topic=a.topic,
                               predictions_topic=a.predictions_topic, dlq_topic=a.dlq_topic)
    client = ClientSettings.load(chunk_frames=a.chunk_frames, credits_per_rank=a.credits,
                                 request_timeout_s=a.request_timeout)
    serve_args = []
    if a.max_batch:
        serve_args += ["--max-batch", str(a.max_batch)]
    if a.rank_threads:
        serve_args += ["--threads", str(a.rank_threads)]
    job = StreamJob(stream, kafka, client, a.ranks, serve_args, a.available_now, a.ready_file,
                    start_ranks=start_serving_gang, spark_log_level=a.log_level)
    status = None
    if a.status_port is not None:
        from status.settings import StatusSettings

        status = StatusSettings.load(port=a.status_port, host=a.status_host,
                                     allow_remote=a.status_allow_remote,
                                     registry=Path(stream.registry) if stream.registry else None,
                                     endpoints_file=Path(stream.endpoints_file))
        status.check_bind()  # before anything starts
    return job, status


def main(argv: list[str] | None = None) -> int:
    try:
        job, status = parse(argv)
        if status is None:
            return job.run()
        from status.server import StatusServer

        with StatusServer(status, job.kafka) as server:  # in this process, in threads
            print(f"status page: {server.url}", flush=True)
            return job.run()
    except FramestreamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as exc:  # ConfigError names the setting; a taken status port
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
