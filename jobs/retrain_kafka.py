"""``spark-submit jobs/retrain_kafka.py --ranks 2 [-- retrain flags]``: retrain on labeled frames
from Kafka, LINE's way.

Reserves a gang of N ranks on Ray (like the cron and the stream) and starts
``jobs/retrain.py --source zmq`` on it through the launcher; a Spark job reads everything on the
``labels`` topic now (image bytes with the true label in the ``fs-label`` header), decodes and
resizes it with the stream's own ETL on the executors, and pushes training batches over ZeroMQ to
the ranks; then the ranks train data-parallel and rank 0 publishes a registry version (promoted
through the usual gate). Prints rank 0's result (its result file) with the feed counts.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from etl.client import ClientSettings
from etl.feed import feed, offset_range
from framestream.config import KafkaSettings
from framestream.exits import OK, entry_point
from framestream.flags import add_settings, from_args
from framestream.logs import setup_logging
from framestream.paths import state_dir


def run(ranks: int, retrain_args: list[str], bootstrap: str, topic: str, work_dir: str,
        timeout_s: float = 3600.0, client: ClientSettings | None = None,
        log_level: str | None = None) -> dict[str, Any]:
    """Reserve ``ranks`` on Ray, start ``jobs.retrain --source zmq`` on them, feed it the labels
    topic, wait for it; returns rank 0's result file with the feed counts added.

    The same gang as the cron's and the stream's (:class:`launcher.api.Launcher`;
    FRAMESTREAM_RAY_ADDRESS names a shared cluster, FRAMESTREAM_LAUNCHER_* the gang's shape), run
    to completion under :class:`~launcher.policy.CompletionPolicy` with no retry: the labels are
    fed once, so a second try would wait for data that never comes. Raises RankFailed (the first
    failing rank: rank, host, pid, exception, traceback), DeadlineExceeded, or FramestreamError
    when the ranks exit 0 without a result.
    """
    import subprocess

    from etl.decode import FrameLimits
    from etl.session import spark_session
    from framestream.errors import DeadlineExceeded, FramestreamError
    from launcher.api import Launcher
    from launcher.policy import CompletionPolicy, Finished
    from launcher.settings import LauncherSettings
    from models.nets import DEFAULT_SPECS
    from framestream import endpoints as endpoints_mod
    from framestream.wire import CONTROL_TOKEN_ENV, new_control_token

    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    ep_file = work / "train-endpoints.json"
    before = endpoints_mod.read(ep_file)
    offsets = offset_range(bootstrap, topic)
    args = ["--source", "zmq", "--feed-endpoints", str(ep_file),
            "--data-range", json.dumps({"topic": topic, **offsets}), *retrain_args]
    token = new_control_token()  # for the ranks' environment and our END, nobody else
    policy = CompletionPolicy(max_retries=0)
    deadline = time.monotonic() + timeout_s
    with Launcher("retrain-kafka", LauncherSettings.load(ranks=ranks),
                  run_dir=work / "gang") as launcher:
        policy.start()
        job = launcher.start("jobs.retrain", args, env={CONTROL_TOKEN_ENV: token})
        try:
            try:
                published = endpoints_mod.wait_for(ep_file, 120, before.generation if before else -1)
            except DeadlineExceeded:
                if job.poll() is not None:  # the ranks died before they listened: say why
                    raise job.failure(job.wait()) from None
                raise
            counts = feed(spark_session(log_level=log_level), bootstrap, topic, offsets,
                          published, str(ep_file),
                          DEFAULT_SPECS["fashion_cnn"].to_dict(), client or ClientSettings.load(),
                          FrameLimits.load().model_dump(), control_token=token)
            try:
                code = job.wait(max(0.001, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise DeadlineExceeded("retrain_kafka", f"the {ranks} training ranks to finish",
                                       timeout_s, "--timeout") from None
        finally:
            job.stop()
        result = job.result()
        action = policy.exited(code, result is not None)
        if not isinstance(action, Finished):
            raise job.failure(code) if code else FramestreamError(getattr(action, "reason", ""))
    assert result is not None
    result.update(feed=counts, data_range={"topic": topic, **offsets})
    return result


@entry_point
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="spark-submit jobs/retrain_kafka.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ranks", type=int, default=2, help="training ranks (mpirun -n)")
    add_settings(p, KafkaSettings, "bootstrap", "labels_topic", aliases={"labels_topic": "--topic"})
    p.add_argument("--work-dir", type=Path, help="logs and the ranks' endpoint file")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds for the whole run")
    p.add_argument("--log-level", default=None,
                   help="framestream's and Spark's log level (default: framestream INFO, "
                        "Spark WARN; FRAMESTREAM_LOG_LEVEL, FRAMESTREAM_SPARK_LOG_LEVEL)")
    p.add_argument("retrain_args", nargs=argparse.REMAINDER,
                   help="after --: flags for jobs/retrain.py (--epochs, --registry, ...)")
    a = p.parse_args(argv)
    setup_logging(a.log_level)
    kafka = from_args(a, KafkaSettings)
    work = a.work_dir or state_dir() / "retrain-kafka" / time.strftime("%Y%m%d-%H%M%S")
    extra = [x for x in a.retrain_args if x != "--"]
    result = run(a.ranks, extra, kafka.bootstrap, kafka.labels_topic, str(work),
                 timeout_s=a.timeout, log_level=a.log_level)
    print(json.dumps(result), flush=True)
    return OK


if __name__ == "__main__":
    sys.exit(main())
