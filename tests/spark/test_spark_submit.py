"""`.venv/bin/spark-submit` works as the README shows with the venv NOT activated (a PATH whose
python3 is not the venv's), from outside the checkout and without PYTHONPATH: the driver and the
executors import framestream from the installed project, and Spark logs at WARN unless told."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.spark, pytest.mark.slow]

SPARK_SUBMIT = Path(sys.executable).parent / "spark-submit"
SPARK_INFO = re.compile(r"^\d\d/\d\d/\d\d \d\d:\d\d:\d\d INFO ", re.M)  # Spark's own layout
JOB = """
import json, sys
from etl.session import SparkSettings, spark_session

spark = spark_session(SparkSettings.load(ui=False))
def where(_):  # runs in the executors' Python workers
    import framestream.wire
    yield framestream.wire.__file__
files = spark.sparkContext.parallelize(range(2), 2).mapPartitions(where).collect()
print(json.dumps({"files": files}), flush=True)
spark.stop()
"""


def bare_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """No venv on PATH (its python3 has no pyspark), no PYTHONPATH, no SPARK_HOME."""
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(Path.home()),
            "TMPDIR": str(tmp_path), **extra}


def test_spark_submit_finds_spark_without_the_venv_on_path(tmp_path: Path) -> None:
    out = subprocess.run([str(SPARK_SUBMIT), "--version"], cwd=tmp_path, env=bare_env(tmp_path),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "version 4.2.0" in out.stdout + out.stderr


def test_a_job_runs_from_anywhere_and_logs_at_warn(tmp_path: Path) -> None:
    job = tmp_path / "job.py"
    job.write_text(JOB)
    out = subprocess.run([str(SPARK_SUBMIT), str(job)], cwd=tmp_path, env=bare_env(tmp_path),
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    files = json.loads(out.stdout.strip().splitlines()[-1])["files"]
    root = Path(__file__).resolve().parents[2]  # installed editable from this checkout
    assert files and all(f == str(root / "framestream" / "wire.py") for f in files), files
    assert not SPARK_INFO.findall(out.stderr), SPARK_INFO.findall(out.stderr)[:5]


def test_a_chosen_level_shows_spark_info_from_the_start(tmp_path: Path) -> None:
    job = tmp_path / "job.py"
    job.write_text(JOB)
    out = subprocess.run([str(SPARK_SUBMIT), str(job)], cwd=tmp_path,
                         env=bare_env(tmp_path, FRAMESTREAM_SPARK_LOG_LEVEL="INFO"),
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "INFO SparkContext: Running Spark version" in out.stderr  # the context's first line
