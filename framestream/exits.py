"""One table of exit codes for every framestream entry point, and the ``main`` wrapper that uses it.

    @entry_point
    def main(argv: list[str] | None = None) -> int:
        ...                       # return OK / NOT_DONE, or raise: the wrapper picks the code

Each :class:`~framestream.errors.FramestreamError` class carries its code (``exit_status``; not
``exit_code``, which RankFailed uses for the rank's own): ConfigError is a usage error,
ServiceError and DeadlineExceeded are an engine that failed or did not answer, anything else
framestream raises is a failure. The README's table of exit codes is
generated from :data:`TABLE` (``python -m jobs.settings_doc --write README.md``).
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable, Sequence

from framestream.errors import FramestreamError

log = logging.getLogger(__name__)

OK = 0
NOT_DONE = 1      # the work ran and did not succeed (also: an unexpected error, a bug)
USAGE = 2         # bad flags, a bad setting, a name that does not exist
SERVICE = 3       # an engine or a service failed, or did not answer in time
INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), after a clean shutdown

#: (code, name, meaning) for the README
TABLE: tuple[tuple[int, str, str], ...] = (
    (OK, "OK", "done"),
    (NOT_DONE, "NOT_DONE", "the work ran and did not succeed (frames not acknowledged, a "
                           "retraining run failed, a version not promoted, a refused key operation), or an "
                           "unexpected error (a bug: the traceback is logged)"),
    (USAGE, "USAGE", "bad flags or a bad setting (`ConfigError` names it), or something a setting "
                     "names that is not there as it must be (a model version, an output topic)"),
    (SERVICE, "SERVICE", "an engine or service failed or did not answer in time (Kafka, Spark, "
                         "Ray, MPI, the ranks: `ServiceError`, `DeadlineExceeded`)"),
    (INTERRUPTED, "INTERRUPTED", "stopped by Ctrl-C (SIGINT) after a clean shutdown"),
)
CODES = frozenset(code for code, _, _ in TABLE)

Main = Callable[[Sequence[str] | None], int | None]


def code_for(exc: BaseException) -> int:
    """The exit code of an error that ended an entry point."""
    if isinstance(exc, KeyboardInterrupt):
        return INTERRUPTED
    if isinstance(exc, FramestreamError):
        return int(getattr(exc, "exit_status", NOT_DONE))
    if isinstance(exc, ValueError):  # a value the user gave, refused outside the settings
        return USAGE
    if isinstance(exc, OSError):     # a file that is missing, a port that is taken
        return SERVICE if isinstance(exc, (ConnectionError, TimeoutError)) else NOT_DONE
    return NOT_DONE


def entry_point(main: Main) -> Callable[..., int]:
    """Wrap an entry point's ``main(argv)``: what it returns (None = OK) or the code of what it
    raised, with the error on stderr (one line: what happened and what to do) and, for an
    unexpected one, its traceback in the log. argparse's own exit (2, or 0 for --help) passes."""

    @functools.wraps(main)
    def wrapper(argv: Sequence[str] | None = None) -> int:
        try:
            code = main(argv)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return INTERRUPTED
        except (FramestreamError, ValueError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return code_for(exc)
        except Exception as exc:  # a bug: say so, keep the traceback for the report
            log.exception("unexpected error")
            print(f"error: unexpected {type(exc).__name__}: {exc} (a bug: please report it with "
                  f"the log above)", file=sys.stderr)
            return NOT_DONE
        return OK if code is None else int(code)

    wrapper.framestream_entry_point = True  # type: ignore[attr-defined]
    return wrapper
