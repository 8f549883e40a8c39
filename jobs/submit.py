"""Console scripts for the Spark jobs: ``framestream-stream ARGS`` runs
``spark-submit <installed>/jobs/stream_classify.py ARGS`` and ``framestream-retrain-kafka ARGS``
runs ``spark-submit <installed>/jobs/retrain_kafka.py ARGS``.

They work from any directory, with the venv activated or not: Spark is the pyspark of the Python
that runs the command (``SPARK_HOME``, unless set), so nothing depends on which ``python3`` is on
``PATH``. Spark's own flags (``--master``, ``--conf``) go to ``spark-submit`` itself or into the
settings (``FRAMESTREAM_SPARK_MASTER``); everything after the command goes to the job.
"""

from __future__ import annotations

import os
import sys
from importlib.util import find_spec
from pathlib import Path
from typing import NoReturn


def _job_file(module: str) -> str:
    spec = find_spec(module)
    if spec is None or not spec.origin:
        raise SystemExit(f"error: {module} is not installed: run `make setup` "
                         f"(pip install -e . into the venv)")
    return spec.origin


def spark_submit_argv(module: str, argv: list[str]) -> tuple[str, list[str], dict[str, str]]:
    """(executable, argv, env) that run ``module``'s file under this Python's pyspark."""
    import pyspark

    env = dict(os.environ)
    home = env.setdefault("SPARK_HOME", str(Path(pyspark.__file__).resolve().parent))
    env.setdefault("PYSPARK_PYTHON", sys.executable)
    env.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    exe = str(Path(home) / "bin" / "spark-submit")
    return exe, [exe, _job_file(module), *argv], env


def _exec(module: str) -> NoReturn:
    exe, argv, env = spark_submit_argv(module, sys.argv[1:])
    os.execve(exe, argv, env)


def stream() -> NoReturn:
    _exec("jobs.stream_classify")


def retrain_kafka() -> NoReturn:
    _exec("jobs.retrain_kafka")
