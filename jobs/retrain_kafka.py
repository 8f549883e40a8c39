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
    """Launch ``mpirun -n ranks python jobs/retrain.py --source zmq``, feed it the labels topic,
    wait for it; returns rank 0's result with the feed counts added."""
    import subprocess

    from etl.decode import FrameLimits
    from etl.session import spark_session
    from framestream.errors import DeadlineExceeded
    from launcher.gang import parse_failure
    from launcher.mpirun import die_with_parent, kill_group, mpi_env, mpirun_cmd
    from models.nets import DEFAULT_SPECS
    from framestream import endpoints as endpoints_mod
    from framestream.wire import CONTROL_TOKEN_ENV, new_control_token

    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    ep_file = work / "train-endpoints.json"
    before = endpoints_mod.read(ep_file)
    offsets = offset_range(bootstrap, topic)
    cmd = mpirun_cmd(ranks, "jobs.retrain", ["--source", "zmq", "--feed-endpoints", str(ep_file),
                                             "--data-range", json.dumps(
                                                 {"topic": topic, **offsets}), *retrain_args])
    token = new_control_token()  # for the ranks' environment and our END, nobody else
    with open(work / "ranks.out", "wb") as out, open(work / "ranks.log", "wb") as err:
        proc = subprocess.Popen(cmd, env=mpi_env({CONTROL_TOKEN_ENV: token}), stdout=out,
                                stderr=err,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                preexec_fn=die_with_parent)
    try:
        published = endpoints_mod.wait_for(ep_file, 120, before.generation if before else -1)
        spark = spark_session(log_level=log_level)
        counts = feed(spark, bootstrap, topic, offsets, published, str(ep_file),
                      DEFAULT_SPECS["fashion_cnn"].to_dict(), client or ClientSettings.load(),
                      FrameLimits.load().model_dump(), control_token=token)
        try:
            code = proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            raise DeadlineExceeded("retrain_kafka", f"the {ranks} training ranks to finish",
                                   timeout_s, "--timeout") from None
    finally:
        if proc.poll() is None:
            kill_group(proc)  # type: ignore[arg-type]
    if code != 0:
        raise parse_failure(code, (work / "ranks.log").read_text(errors="replace")[-3000:])
    lines = (work / "ranks.out").read_text().strip().splitlines()
    result = json.loads(lines[-1]) if lines else {}
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
