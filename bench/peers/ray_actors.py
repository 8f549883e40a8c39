"""The Kafka + Ray paper's architecture: Ray actors, each a kafka-python consumer on its own
partitions, decoding and classifying in batches and producing predictions.

    python -m bench.peers.ray_actors --set fashion --topic-in T --topic-out P --workers 2 \
        --threads 1 --batch 256

A private local Ray instance with ``--workers`` CPUs; one actor per CPU (``num_cpus=1``).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from bench.peers.common import parser, stop_on_sigterm, touch


def main(argv: list[str] | None = None) -> int:
    p = parser("python -m bench.peers.ray_actors", __doc__ or "")
    a = p.parse_args(argv)
    stopping = stop_on_sigterm()
    import ray

    from framestream.paths import REPO

    ray.init(address="local", num_cpus=a.workers, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})

    @ray.remote(num_cpus=1)
    class KafkaWorker:
        def run(self, cfg: dict, index: int, stop_file: str, ready_file: str) -> int:
            from bench.peers.common import kafka_loop

            return kafka_loop(cfg["set"], cfg["topic_in"], cfg["topic_out"], cfg["bootstrap"],
                              cfg["batch"], cfg["threads"], index, cfg["workers"],
                              lambda: Path(stop_file).exists(), lambda: touch(ready_file),
                              cfg["version"], cfg["registry"], cfg["runtime"])

    work = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    stop_file = work / "stop"
    cfg = {"set": a.set, "topic_in": a.topic_in, "topic_out": a.topic_out,
           "bootstrap": a.bootstrap, "batch": a.batch, "threads": a.threads,
           "workers": a.workers, "version": a.version, "registry": a.registry,
           "runtime": a.runtime}
    actors = [KafkaWorker.remote() for _ in range(a.workers)]
    runs = [w.run.remote(cfg, i, str(stop_file), str(work / f"ready-{i}"))
            for i, w in enumerate(actors)]
    while not stopping() and not all((work / f"ready-{i}").exists() for i in range(a.workers)):
        time.sleep(0.2)
    touch(a.ready_file)
    while not stopping():
        time.sleep(0.2)
    stop_file.touch()
    try:
        print("frames classified per actor:", ray.get(runs, timeout=30), flush=True)
    finally:
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
