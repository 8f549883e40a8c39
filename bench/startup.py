"""Start-up of the stream as users start it: ``spark-submit jobs/stream_classify.py --ranks 2``.

    python -m bench.startup                # 5 rounds; needs the broker (make up)
    python -m bench.startup --rounds 7 --frames 200

Each round: fresh topics with ``--frames`` frames already on them (spread over every partition),
then ``spark-submit jobs/stream_classify.py --ranks 2 --available-now`` on the registry's serving
version. Measured from the ``spark-submit`` process start: the query's start (``--ready-file``),
the first prediction (the earliest ``prediction_ts`` on the output topic) and the job's end; the
driver's own log gives the phases (ranks up, Python workers warmed). The first round also pays
for the version's ONNX export (cached beside the weights afterwards); every round pays for the
JVM, Ray, mpirun and the parity gate. Writes ``bench/results/startup-<stamp>.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import kafka_io
from bench.common import Run, setup_logging
from bench.fair import stats
from bench.frameset import frame_set
from bench.pipelines import SPARK_SUBMIT, child_env
from framestream import results
from framestream.config import KafkaSettings
from framestream.paths import REPO

log = logging.getLogger(__name__)
PHASES = {"ranks_up_s": r"ranks up on gang", "workers_warmed_s": r"warmed \d+ Python workers",
          "query_started_s": r"query framestream started"}


def _phase_times(log_text: str, day_start: float, t0: float) -> dict[str, float]:
    """Seconds after ``t0`` of each phase's log line (``HH:MM:SS`` stamps of today)."""
    out = {}
    for name, pattern in PHASES.items():
        m = re.search(rf"^(\d\d):(\d\d):(\d\d) \w+ .*{pattern}", log_text, re.M)
        if m:
            h, mi, s = (int(x) for x in m.groups())
            out[name] = round(day_start + h * 3600 + mi * 60 + s - t0, 1)
    return out


def one_round(k: int, run: Run, fs: Any, pub: kafka_io.Publisher, bootstrap: str,
              version: str, registry: str, frames: int, ranks: int) -> dict[str, Any]:
    topics = {x: kafka_io.topic_names(pub.run, "startup", str(k), x) for x in ("in", "out", "dlq")}
    kafka_io.make_topics(bootstrap, list(topics.values()))
    work = run.scratch(f"round-{k}")
    work.mkdir(parents=True, exist_ok=True)
    try:
        sent = pub.send(fs, topics["in"], frames)
        ready = work / "ready.json"
        cmd = [SPARK_SUBMIT, str(REPO / "jobs/stream_classify.py"), "--ranks", str(ranks),
               "--available-now", "--version", version, "--registry", registry,
               "--topic", topics["in"], "--predictions-topic", topics["out"],
               "--dlq-topic", topics["dlq"], "--checkpoint", str(work / "checkpoint"),
               "--endpoints", str(work / "endpoints.json"), "--starting-offsets",
               "earliest", "--ready-file", str(ready)]
        t0 = time.time()
        with open(work / "stream.log", "wb") as out:
            code = subprocess.run(cmd, env=child_env(), stdout=out, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, cwd=REPO, timeout=600).returncode
        ended = time.time() - t0
        text = (work / "stream.log").read_text(errors="replace")
        if code != 0:
            raise RuntimeError(f"round {k}: the stream exited {code}; log {work / 'stream.log'}")
        recs = results.read_topic(bootstrap, topics["out"], None, count=frames, timeout=60)
        first = min(json.loads(r.value)["prediction_ts"] for r in recs)
        day = time.mktime(time.localtime(t0)[:3] + (0, 0, 0, 0, 0, -1))
        return {"round": k, "frames": sent["sent"], "predictions": len(recs),
                "per_partition": sent["per_partition"],
                "query_started_s": round(json.loads(ready.read_text())["started"] - t0, 2),
                "first_prediction_s": round(first - t0, 2), "ended_s": round(ended, 2),
                "phases_from_log": _phase_times(text, day, t0)}
    finally:
        kafka_io.drop_topics(bootstrap, list(topics.values()))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.startup", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--registry", help="registry root (default: the state dir's)")
    a = p.parse_args(argv)
    setup_logging()
    from bench.stream import trained_version

    run = Run("startup", {"rounds": a.rounds, "frames": a.frames, "ranks": a.ranks,
                          "command": "spark-submit jobs/stream_classify.py --ranks N "
                                     "--available-now (times from the process start)"}, "quick")
    model = trained_version(a.registry, 2)
    run.results = {"model": model, "rounds": []}
    bootstrap = KafkaSettings.load().bootstrap
    pub = kafka_io.Publisher(bootstrap)
    try:
        for k in range(a.rounds):
            r = one_round(k, run, frame_set("fashion"), pub, bootstrap, model["version"],
                          model["registry"], a.frames, a.ranks)
            log.info("round %d: %s", k, r)
            run.results["rounds"].append(r)
            run.save()
        rounds = run.results["rounds"]
        run.results["summary"] = {key: stats([r[key] for r in rounds]) for key in
                                  ("query_started_s", "first_prediction_s", "ended_s")}
        run.results["goal_first_prediction_s"] = 10.0
    finally:
        pub.close()
        run.save()
    print(json.dumps(run.results["summary"]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
