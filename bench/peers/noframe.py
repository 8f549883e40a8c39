"""No framework: one Python process, a kafka-python consumer, a torch loop, a producer.

    python -m bench.peers.noframe --set fashion --topic-in T --topic-out P --batch 256 --threads 2
"""

from __future__ import annotations

import sys

from bench.peers.common import kafka_loop, parser, stop_on_sigterm, touch


def main(argv: list[str] | None = None) -> int:
    p = parser("python -m bench.peers.noframe", __doc__ or "")
    a = p.parse_args(argv)
    stopping = stop_on_sigterm()
    kafka_loop(a.set, a.topic_in, a.topic_out, a.bootstrap, a.batch, a.threads,
               0, 1, stopping, lambda: touch(a.ready_file), a.version, a.registry, a.runtime)
    return 0


if __name__ == "__main__":
    sys.exit(main())
