"""The ranks' result and error files (framestream.run_files), written and read back in-process."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from framestream import run_files
from framestream.run_files import RUN_DIR_ENV


def _raise(exc: BaseException, rank: int) -> Path | None:
    try:
        raise exc
    except BaseException as e:  # noqa: BLE001 -- the way abort_on_error records it
        return run_files.write_error(e, rank)


def test_nothing_is_written_without_a_run_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(RUN_DIR_ENV, raising=False)
    assert run_files.write_result({"x": 1}) is None
    assert _raise(ValueError("x"), 0) is None


def test_rank_0_writes_the_result_and_other_ranks_do_not(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(RUN_DIR_ENV, str(tmp_path))
    assert run_files.read_result(tmp_path) is None
    assert run_files.write_result({"version": "v0003"}, rank=1) is None
    assert run_files.write_result({"version": "v0002", "promoted": True}) == tmp_path / "result.json"
    assert run_files.read_result(tmp_path) == {"version": "v0002", "promoted": True}


def test_error_file_has_torch_elastics_layout_plus_rank_host_pid(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(RUN_DIR_ENV, str(tmp_path))
    path = _raise(ValueError("bad x"), 3)
    data = json.loads(path.read_text())
    assert data["message"]["message"] == "ValueError: bad x"
    info = data["message"]["extraInfo"]
    assert "Traceback" in info["py_callstack"] and "ValueError: bad x" in info["py_callstack"]
    assert int(info["timestamp"]) > 0
    assert (data["rank"], data["pid"]) == (3, os.getpid()) and data["host"]
    [err] = run_files.read_errors(tmp_path)
    assert (err.rank, err.pid, err.message) == (3, os.getpid(), "ValueError: bad x")


def test_first_failure_comes_first_and_a_bad_file_is_reported_not_skipped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(RUN_DIR_ENV, str(tmp_path))
    _raise(RuntimeError("the cause"), 2)
    _raise(RuntimeError("aborted by rank 2"), 0)
    (tmp_path / "error-rank5.json").write_text("{not json")
    errors = run_files.read_errors(tmp_path)
    assert [e.rank for e in errors] == [2, 0, 5]
    assert errors[0].message == "RuntimeError: the cause"
    assert errors[2].message.startswith("unreadable error file")


def test_oversized_or_non_object_results_are_refused(tmp_path: Path) -> None:
    (tmp_path / "result.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a JSON object"):
        run_files.read_result(tmp_path)
    (tmp_path / "result.json").write_bytes(b" " * (run_files.MAX_FILE_BYTES + 1))
    with pytest.raises(ValueError, match="more than"):
        run_files.read_result(tmp_path)


def test_clear_leaves_a_reused_folder_without_old_results_or_errors(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(RUN_DIR_ENV, str(tmp_path))
    run_files.write_result({"version": "old"})
    _raise(ValueError("old failure"), 1)
    (tmp_path / "ranks.log").write_text("kept for humans")
    run_files.clear(tmp_path)
    assert run_files.read_result(tmp_path) is None and run_files.read_errors(tmp_path) == []
    assert (tmp_path / "ranks.log").exists()
