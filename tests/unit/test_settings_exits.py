"""One exit-code table: every framestream error has one code from it, every entry point's main
goes through the one wrapper, and the wrapper turns what a main does into the table's code."""

from __future__ import annotations

import importlib
import re

import pytest

from framestream.errors import ConfigError, DeadlineExceeded, FramestreamError, ServiceError
from framestream.exits import (CODES, INTERRUPTED, NOT_DONE, OK, SERVICE, USAGE, code_for,
                               entry_point)
from framestream.paths import REPO

#: module -> the function its ``__main__`` block calls
ENTRY_POINTS = {
    "jobs.stream_classify": "main", "jobs.produce": "main", "jobs.retrain_cron": "main",
    "jobs.retrain_kafka": "main", "jobs.demo": "main", "jobs.settings_doc": "main",
    "launcher.__main__": "main", "status.__main__": "main", "stack.__main__": "main",
    "stack.cluster_demo": "main",
    "models.registry_cli": "run", "framestream.keys": "main",
}
#: modules with a ``__main__`` block that do not use the table, each with its reason
NOT_ENTRY_POINTS = {
    "jobs.retrain": "a rank under mpirun: a failing rank aborts the job (abort_on_error)",
    "mpi_workers.serve": "a rank under mpirun: a failing rank aborts the job (abort_on_error)",
    "mpi_workers.selfcheck": "a rank under mpirun (launcher's check job)",
    "mpi_workers.train_check": "a rank under mpirun (a test job)",
    "launcher.rank_exec": "execs the rank's program: its status is the program's",
    "launcher.rsh": "mpirun's remote agent: its status is the remote command's",
    "models.registry": "runs models.registry_cli",
}
PRODUCT = ("framestream", "etl", "mpi_workers", "launcher", "models", "jobs", "status", "stack")


def _error_classes() -> set[type]:
    for name in ("etl.client", "launcher.errors", "launcher.ray_gang", "models.errors",
                 "framestream.limits", "framestream.topics", "framestream.security",
                 "framestream.wire", "mpi_workers.backends"):
        importlib.import_module(name)
    seen: set[type] = set()
    todo = [FramestreamError]
    while todo:
        cls = todo.pop()
        seen.add(cls)
        todo += [c for c in cls.__subclasses__() if c not in seen]
    return seen


def test_every_framestream_error_has_one_code_of_the_table() -> None:
    classes = _error_classes()
    assert len(classes) > 10
    for cls in classes:
        assert cls.exit_status in CODES, f"{cls.__name__}.exit_status {cls.exit_status}: not a code"
    by_name = {cls.__name__: cls.exit_status for cls in classes}
    assert by_name["ConfigError"] == by_name["InsecureBind"] == USAGE
    assert by_name["VersionNotFound"] == by_name["TopicsNotReady"] == USAGE  # not there
    assert by_name["ServiceError"] == by_name["DeadlineExceeded"] == SERVICE
    assert by_name["GangReservationTimeout"] == by_name["RanksUnavailable"] == SERVICE
    assert by_name["RankFailed"] == SERVICE
    assert by_name["FramestreamError"] == by_name["ChecksumMismatch"] == NOT_DONE


def test_code_for_reads_the_class_and_not_a_ranks_exit_code() -> None:
    from launcher.errors import RankFailed

    assert code_for(RankFailed(137, "killed")) == SERVICE  # its .exit_code is the rank's: 137
    assert code_for(ConfigError("FRAMESTREAM_X", 1, "2")) == USAGE
    assert code_for(DeadlineExceeded("a", "b", 1.0)) == SERVICE
    assert code_for(KeyboardInterrupt()) == INTERRUPTED


def test_every_entry_point_uses_the_wrapper() -> None:
    found = set()
    for folder in PRODUCT:
        for path in (REPO / folder).rglob("*.py"):
            if re.search(r'^if __name__ == "__main__":', path.read_text(), re.M):
                found.add(".".join(path.relative_to(REPO).with_suffix("").parts))
    assert found == set(ENTRY_POINTS) | set(NOT_ENTRY_POINTS), \
        "a new entry point: wrap its main with framestream.exits.entry_point and list it here"
    for module, func in ENTRY_POINTS.items():
        main = getattr(importlib.import_module(module), func)
        assert getattr(main, "framestream_entry_point", False), f"{module}.{func} is not wrapped"


@pytest.mark.parametrize("raised, code", [
    (ConfigError("FRAMESTREAM_KAFKA_PARTITIONS", 0, "1..1024"), USAGE),
    (ServiceError("no Kafka broker answers: start one with `make up`"), SERVICE),
    (FramestreamError("the run failed"), NOT_DONE),
    (RuntimeError("a bug"), NOT_DONE),
    (KeyboardInterrupt(), INTERRUPTED),
])
def test_the_wrapper_exits_with_the_code_of_what_main_raised(raised: BaseException, code: int,
                                                             capsys: pytest.CaptureFixture) -> None:
    @entry_point
    def main(argv: list[str] | None = None) -> int:
        raise raised

    assert main([]) == code
    err = capsys.readouterr().err
    said = "interrupted" if isinstance(raised, KeyboardInterrupt) else str(raised)
    assert said in err


def test_the_wrapper_passes_returns_and_argparse_exits() -> None:
    import argparse

    @entry_point
    def main(argv: list[str] | None = None) -> int | None:
        argparse.ArgumentParser().parse_args(argv)
        return None if not argv else NOT_DONE

    assert main([]) == OK
    with pytest.raises(SystemExit) as exited:
        main(["--no-such-flag"])
    assert exited.value.code == USAGE
