"""``python -m jobs.produce``: publish real frames to Kafka's ``frames`` topic.

    python -m jobs.produce --count 20000 --rate 500          # Fashion-MNIST test images, PNG
    python -m jobs.produce --format jpeg --sources 8 --corrupt 10
    python -m jobs.produce --folder ./snapshots --topic frames

Flags override ``FRAMESTREAM_KAFKA_*`` / ``FRAMESTREAM_PRODUCER_*`` settings. The topic is created
when missing. Prints one summary line; exits 1 when any frame was not acknowledged,
3 when no broker answers (see the exit-code table in the README).
``--corrupt K`` mixes in K broken frames from ``framestream/hostile.py`` (a chaos option for
checking the DLQ), each labelled with ``fs-corrupt`` and the
DLQ reason it must get in ``fs-expect``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from framestream.config import KafkaSettings
from framestream.errors import ServiceError
from framestream.exits import NOT_DONE, OK, SERVICE, entry_point
from framestream.flags import add_settings, from_args
from framestream.logs import setup_logging
from framestream.producer import (ProducerSettings, fashion_frames, folder_frames, mix_in,
                                  publish_frames, run_id)

log = logging.getLogger("jobs.produce")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m jobs.produce", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--folder", type=Path, help="publish the files of DIR as they are")
    src.add_argument("--split", choices=("test", "train"), default="test",
                     help="Fashion-MNIST split to publish (default test)")
    p.add_argument("--count", type=int, default=None,
                   help="frames to publish (default: the whole split / folder; cycles beyond)")
    add_settings(p, ProducerSettings, "format", "quality", "sources", "rate", "deadline_s",
                 aliases={"deadline_s": "--deadline"})
    add_settings(p, KafkaSettings, "frames_topic", "bootstrap", aliases={"frames_topic": "--topic"})
    p.add_argument("--corrupt", type=int, default=0, metavar="K",
                   help="also publish K hostile frames, labelled with the DLQ reason they need")
    p.add_argument("--seed", type=int, default=0, help="where the corrupt frames go")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.count is not None and args.count < 0:
        p.error("--count must be >= 0")
    if args.corrupt < 0:
        p.error("--corrupt must be >= 0")
    return args


def _corrupt_frames(k: int, seed: int) -> list[tuple[str, bytes, str]]:
    from framestream.hostile import hostile_mix

    return [(h.kind, h.data, h.expect.value) for h in hostile_mix(k, seed) if h.expect]


@entry_point
def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = parse_args(argv)
    try:
        kafka = from_args(args, KafkaSettings)
        settings = from_args(args, ProducerSettings)
        from framestream.kafka_admin import broker_answers, ensure_topics

        wait = min(kafka.request_timeout_s, settings.deadline_s)
        # the admin client carries the security settings too (framestream.kafka_clients)
        if not broker_answers(kafka, timeout=wait):
            raise ServiceError(f"no Kafka broker answers at {kafka.bootstrap} within {wait:.0f}s"
                               f" with FRAMESTREAM_KAFKA_SECURITY_PROTOCOL="
                               f"{kafka.security_protocol}: start one with `make up`, pass "
                               f"--bootstrap, or check the security settings")
        ensure_topics(kafka, [kafka.frames_topic], kafka.partitions, timeout=wait)
        run = run_id()
        if args.folder is not None:
            frames = folder_frames(args.folder, args.count, run=run)
            total = args.count if args.count is not None else sum(
                1 for p in args.folder.iterdir() if p.is_file() and not p.name.startswith("."))
        else:
            total = args.count if args.count is not None else 10_000
            frames = fashion_frames(total, settings.format, settings.sources, settings.quality,
                                    split=args.split, run=run)
        if args.corrupt:
            frames = mix_in(frames, _corrupt_frames(args.corrupt, args.seed), total,
                            seed=args.seed, sources=settings.sources, run=run)
        from tqdm import tqdm

        with tqdm(total=total + args.corrupt, unit="frame", disable=True if args.no_progress
                  else None, desc=f"-> {kafka.frames_topic}") as bar:
            summary = publish_frames(kafka, kafka.frames_topic, frames, settings.rate,
                                     progress=bar.update, settings=settings)
    except Exception as exc:  # kafka-python errors not turned into ours: say what, not a trace
        from kafka.errors import KafkaError

        if not isinstance(exc, KafkaError):
            raise
        log.error("Kafka at %s: %s: %s", kafka.bootstrap, type(exc).__name__, exc)
        return SERVICE
    print(summary.line())
    return OK if summary.failed == 0 else NOT_DONE


if __name__ == "__main__":
    sys.exit(main())
