"""Where the time goes in one end-to-end burst: CPU-seconds per stage, from timers and a profiler.

On a machine where every process shares the same few cores, throughput is cores / (CPU-seconds
per frame) when the cores are kept busy. So the breakdown splits ``cores x wall`` of one gated
burst (framestream draining a backlog) into:

- CPU of each process, from ``psutil`` before and after the burst: the Spark JVM (Kafka source,
  Arrow hand-over, Kafka sink, scheduling), the Kafka broker, Spark's Python workers, the Python
  driver, the ranks, this benchmark process; the JVM is split by thread (``/proc/<pid>/task``
  names: task threads, Kafka producer I/O, micro-batch planning, JIT, GC);
- inside the Python processes, the share of each stage from ``py-spy`` samples (``--format raw``,
  active samples only) classified by the innermost framestream function on the stack: decode,
  preprocess (resize / mode conversion on executors, normalise on ranks), send (``etl.client``),
  receive and queue (a rank's socket loop), forward (the net), reply, sink rows
  (``etl.records``), Arrow I/O between the JVM and Python (``pyspark`` serializers);
- idle: ``cores x wall`` minus all of the above (stalls: triggers, task scheduling, waiting).

py-spy is installed on first use into ``$FRAMESTREAM_CACHE/bench-tools`` (``pip install
--target``); without it the Python processes are shown whole.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from framestream.paths import cache_dir

log = logging.getLogger(__name__)
PYSPY_VERSION = "0.4.3"

#: (file name, function or "*") -> stage, per role; the innermost matching frame decides.
RULES: dict[str, list[tuple[str, str, str]]] = {
    "executor": [("Image.py", "resize", "preprocess"), ("decode.py", "_to_mode", "preprocess"),
                 ("decode.py", "_orient", "preprocess"), ("decode.py", "*", "decode"),
                 ("limits.py", "*", "decode"), ("time_limit.py", "*", "decode"),
                 ("protocol.py", "*", "send"), ("client.py", "*", "send"),
                 ("records.py", "*", "sink rows"), ("frames.py", "*", "sink rows"),
                 ("classify.py", "*", "sink rows"), ("serializers.py", "*", "arrow I/O"),
                 ("worker.py", "*", "arrow I/O"), ("daemon.py", "*", "Spark worker daemon")],
    "rank": [("spec.py", "normalize", "preprocess"), ("server_loop.py", "forward", "forward"),
             ("server_loop.py", "_reply", "reply"), ("server_loop.py", "_accept", "receive"),
             ("server_loop.py", "_infer", "batching"), ("batcher.py", "*", "batching"),
             ("server_loop.py", "run", "receive")],
    "driver": [],
}


def pyspy_path() -> str | None:
    """The py-spy binary, installed with pip into the bench tools folder on first use."""
    target = cache_dir() / "bench-tools"
    exe = target / "bin" / "py-spy"
    if exe.exists():
        return str(exe)
    try:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", str(target),
                        f"py-spy=={PYSPY_VERSION}"], check=True, timeout=300,
                       capture_output=True)
    except (subprocess.SubprocessError, OSError) as exc:
        log.warning("no py-spy (%s): the breakdown shows Python processes whole", exc)
        return None
    return str(exe) if exe.exists() else None


def broker_pids() -> list[int]:
    import psutil

    out = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if "kafka.Kafka" in (p.info["cmdline"] or []):
                out.append(p.pid)
        except psutil.Error:
            continue
    return out


#: JVM thread name (``/proc/<pid>/task/<tid>/comm``, 15 characters) prefix -> what it does.
JVM_THREADS = (("Executor task", "Spark JVM: tasks (Kafka read, Arrow to/from Python, sink rows)"),
               ("stdin writer fo", "Spark JVM: tasks (Kafka read, Arrow to/from Python, sink rows)"),
               ("kafka-producer-", "Spark JVM: Kafka producer I/O (sink)"),
               ("kafka-coordinat", "Spark JVM: Kafka consumer I/O (source)"),
               ("stream executio", "Spark JVM: micro-batch planning and commits"),
               ("dag-scheduler", "Spark JVM: scheduling"), ("dispatcher-even", "Spark JVM: scheduling"),
               ("spark-listener", "Spark JVM: scheduling"),
               ("C2 CompilerThre", "Spark JVM: JIT compilation"),
               ("C1 CompilerThre", "Spark JVM: JIT compilation"),
               ("GC Thread", "Spark JVM: garbage collection"), ("G1 ", "Spark JVM: garbage collection"))
TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def thread_ticks(pid: int) -> dict[int, tuple[str, int]]:
    """tid -> (thread name, user + system clock ticks) of every thread of ``pid`` (Linux)."""
    out = {}
    base = Path(f"/proc/{pid}/task")
    try:
        tids = [int(t) for t in os.listdir(base)]
    except OSError:
        return out
    for tid in tids:
        try:
            name = (base / str(tid) / "comm").read_text().strip()
            fields = (base / str(tid) / "stat").read_text().rsplit(")", 1)[1].split()
            out[tid] = (name, int(fields[11]) + int(fields[12]))
        except (OSError, IndexError, ValueError):
            continue
    return out


def jvm_split(before: dict[int, tuple[str, int]],
              after: dict[int, tuple[str, int]]) -> dict[str, float]:
    """CPU seconds of a JVM between two :func:`thread_ticks` snapshots, by thread kind."""
    out: dict[str, float] = defaultdict(float)
    for tid, (name, ticks) in after.items():
        spent = (ticks - before.get(tid, (name, 0))[1]) / TICK
        kind = next((k for prefix, k in JVM_THREADS if name.startswith(prefix)),
                    "Spark JVM: other threads")
        out[kind] += max(0.0, spent)
    return dict(out)


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    import psutil

    out = {}
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            out[pid] = t.user + t.system
        except psutil.Error:
            continue
    return out


class Profile:
    """psutil CPU snapshots around a burst, and py-spy recorders on the Python processes."""

    def __init__(self, roles: dict[str, list[int]], workdir: Path, rate: int = 50) -> None:
        import psutil

        self.roles = {k: list(v) for k, v in roles.items()}
        self.workdir = workdir
        self.rate = rate
        self.recorders: list[tuple[str, subprocess.Popen[bytes], Path]] = []
        # the Spark Python daemon forks the workers: record it with --subprocesses
        self.daemons = []
        for pid in self.roles.get("spark_python", []):
            try:
                proc = psutil.Process(pid)
                parent = proc.parent()
                forked = parent is not None and any("pyspark.daemon" in a
                                                    for a in parent.cmdline())
                if any("pyspark.daemon" in a for a in proc.cmdline()) and not forked:
                    self.daemons.append(pid)  # workers are its forks: --subprocesses finds them
            except psutil.Error:
                continue

    def all_pids(self) -> list[int]:
        import psutil

        pids = [p for v in self.roles.values() for p in v]
        for d in self.daemons:  # workers forked during the burst count too
            try:
                pids += [c.pid for c in psutil.Process(d).children(recursive=True)]
            except psutil.Error:
                pass
        return sorted(set(pids))

    def start(self) -> None:
        self.jvm0 = {pid: thread_ticks(pid) for pid in self.roles.get("spark_jvm", [])}
        self.cpu0 = cpu_seconds(self.all_pids())
        self.t0 = time.monotonic()
        exe = pyspy_path()
        if exe is None:
            return
        targets = [("executor", d, True) for d in self.daemons]
        targets += [("rank", p, False) for p in self.roles.get("ranks", [])]
        for role, pid, sub in targets:
            out = self.workdir / f"pyspy-{role}-{pid}.raw"
            cmd = [exe, "record", "--pid", str(pid), "--rate", str(self.rate), "--format", "raw",
                   "--output", str(out), "--nonblocking"] + (["--subprocesses"] if sub else [])
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.recorders.append((role, proc, out))

    def stop(self) -> None:
        self.wall = time.monotonic() - self.t0
        pids = self.all_pids()
        self.cpu1 = cpu_seconds(pids)
        self.jvm1 = {pid: thread_ticks(pid) for pid in self.roles.get("spark_jvm", [])}
        for _, proc, _ in self.recorders:
            proc.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        for _, proc, _ in self.recorders:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()

    def role_cpu(self) -> dict[str, float]:
        import psutil

        by_pid = {pid: self.cpu1.get(pid, 0.0) - self.cpu0.get(pid, 0.0) for pid in self.cpu1}
        out: dict[str, float] = defaultdict(float)
        for pid, cpu in by_pid.items():
            role = next((r for r, ps in self.roles.items() if pid in ps), None)
            if role is None:  # a worker forked from the daemon during the burst
                role = "spark_python"
            if role == "spark_python":
                try:
                    cmd = " ".join(psutil.Process(pid).cmdline())
                except psutil.Error:
                    cmd = ""
                role = "spark_driver" if "stream_classify.py" in cmd else "spark_python"
            out[role] += max(0.0, cpu)
        return dict(out)

    def stage_shares(self) -> dict[str, dict[str, float]]:
        """role -> stage -> share of that role's active samples."""
        counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for role, _, path in self.recorders:
            if not path.exists():
                continue
            for line in path.read_text(errors="replace").splitlines():
                stack, _, n = line.rpartition(" ")
                if not n.isdigit():
                    continue
                counts[role][classify(role, stack)] += int(n)
        return {role: {k: v / sum(c.values()) for k, v in c.items()} for role, c in counts.items()}


def classify(role: str, stack: str) -> str:
    frames = [f for f in stack.split(";") if not f.startswith("process ")]
    for frame in reversed(frames):
        func, _, where = frame.partition(" (")
        func = func.rsplit(".", 1)[-1]  # py-spy names methods Class.method
        fname = os.path.basename(where.split(":")[0])
        for rule_file, rule_func, stage in RULES.get(role, []):
            if fname == rule_file and rule_func in ("*", func):
                return stage
    return "other Python"


def summarize(profile: Profile, frames: int, cores: int) -> dict[str, Any]:
    """CPU-seconds per 1,000 frames by stage, plus idle, for the JSON and the stacked bar."""
    cpu = profile.role_cpu()
    shares = profile.stage_shares()
    stages: dict[str, float] = defaultdict(float)
    named = {"spark_jvm": "Spark JVM (Kafka read + sink, Arrow, scheduling)",
             "broker": "Kafka broker", "spark_driver": "Spark Python driver",
             "bench": "benchmark process (offset polling)"}
    jvm: dict[str, float] = defaultdict(float)
    for pid, after in getattr(profile, "jvm1", {}).items():
        for kind, seconds in jvm_split(profile.jvm0.get(pid, {}), after).items():
            jvm[kind] += seconds
    for role, seconds in cpu.items():
        if role == "spark_jvm" and sum(jvm.values()) > 0:
            scale = seconds / sum(jvm.values())  # thread ticks are coarser than psutil's total
            for kind, part in jvm.items():
                stages[kind] += part * scale
            continue
        if role in named:
            stages[named[role]] += seconds
            continue
        key = {"spark_python": "executor", "ranks": "rank"}.get(role, role)
        split = shares.get(key)
        prefix = "executor" if key == "executor" else "rank"
        if not split:
            stages[f"{prefix}: all (no profile)"] += seconds
            continue
        for stage, share in split.items():
            stages[f"{prefix}: {stage}"] += seconds * share
    budget = cores * profile.wall
    busy = sum(stages.values())
    stages["idle cores (stalls, waiting)"] = max(0.0, budget - busy)
    per_k = {k: round(1000 * v / frames, 4) for k, v in sorted(stages.items(), key=lambda kv: -kv[1])}
    return {"frames": frames, "wall_s": round(profile.wall, 3), "cores": cores,
            "cpu_s_by_role": {k: round(v, 3) for k, v in cpu.items()},
            "stage_shares_by_role": shares, "cpu_s_per_1000_frames": per_k,
            "utilisation": round(busy / budget, 3) if budget else None,
            "profiler": "py-spy" if profile.recorders else "psutil only"}
