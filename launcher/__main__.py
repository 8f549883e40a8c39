"""``python -m launcher {serve,retrain,run,status}``: gangs of MPI ranks reserved on Ray.

    python -m launcher serve --ranks 2 -- --version v0003          # serve until Ctrl-C
    python -m launcher retrain --ranks 2 --timeout 600 -- --epochs 3
    python -m launcher run mpi_workers.selfcheck --ranks 2 --strategy SPREAD --address auto
    python -m launcher status [--address auto] [--json]

Arguments after ``--`` go to the ranks' program. Flags override FRAMESTREAM_LAUNCHER_* and
FRAMESTREAM_RAY_ADDRESS (see launcher/settings.py). Exit status: the job's for retrain/run;
otherwise the README's exit-code table (framestream/exits.py): 2 for a bad flag or setting, 3 when
the gang cannot be reserved or the ranks give up.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from framestream.exits import INTERRUPTED, OK, SERVICE, entry_point
from framestream.flags import add_settings, from_args, given
from launcher.ray_cluster import RaySettings
from launcher.settings import LauncherSettings

COMMON = ("ranks", "cpus_per_rank", "gpus_per_rank", "resources_per_rank", "strategy",
          "timeout_s", "retries", "restarts")


def _split(argv: list[str]) -> tuple[list[str], list[str]]:
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, []


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m launcher", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("serve", "retrain", "run", "status"):
        sp = sub.add_parser(name)
        add_settings(sp, RaySettings, "address")
        sp.add_argument("--log-level", default=None)
        if name == "status":
            sp.add_argument("--json", action="store_true", help="print the records as JSON")
            continue
        if name == "run":
            sp.add_argument("module", help="the ranks' program, run as python -m MODULE")
        add_settings(sp, LauncherSettings, *COMMON,
                     aliases={"resources_per_rank": "--resource", "timeout_s": "--timeout"})
        sp.add_argument("--name", help="gang name (default <command>-<random>)")
        if name == "serve":
            sp.add_argument("--endpoints", help="where rank 0 publishes (default <state>/endpoints.json)")
        else:
            sp.add_argument("--job-timeout", type=float, default=3600.0,
                            help="seconds the job may run, restarts included (default 3600)")
    return p


def _status(a: argparse.Namespace) -> int:
    from launcher.records import read_all, render

    records = read_all()
    cluster = None
    address = given(a, RaySettings).get("address") or next((r["ray_address"] for r in records
                                 if r.get("alive") and r.get("ray_address")), None)
    if address:
        cluster = _cluster(address)
    if a.json:
        print(json.dumps({"cluster": cluster, "gangs": records}, indent=1, default=str))
    else:
        print(render(records, cluster))
    return OK


def _cluster(address: str) -> dict[str, Any]:
    import ray
    from ray.util import placement_group_table

    from launcher.ray_cluster import connect
    from launcher.reservation import user_resources

    info = connect(RaySettings(address=address if address != "local" else "auto"))
    try:
        pgs = [{"id": pid, "name": t.get("name", ""), "state": t.get("state"),
                "strategy": t.get("strategy"), "bundles": len(t.get("bundles", {}))}
               for pid, t in placement_group_table().items() if t.get("state") != "REMOVED"]
        total = user_resources(ray.cluster_resources())
        free = ray.available_resources()  # leaves out what is at 0
        return {"address": info.get("gcs_address", address), "dashboard": info.get("dashboard_url"),
                "nodes": sum(1 for n in ray.nodes() if n.get("Alive")),
                "free": {k: free.get(k, 0.0) for k in total}, "total": total,
                "placement_groups": pgs}
    finally:
        ray.shutdown()


@entry_point
def main(argv: list[str] | None = None) -> int:
    from framestream.logs import setup_logging
    from launcher.api import Launcher

    own, rest = _split(list(sys.argv[1:] if argv is None else argv))
    a = _parser().parse_args(own)
    setup_logging(a.log_level)
    if a.command == "status":
        return _status(a)
    settings = from_args(a, LauncherSettings)
    ray_settings = from_args(a, RaySettings)
    cancel = threading.Event()

    def on_term(signum: int, _frame: object) -> None:
        cancel.set()
        raise KeyboardInterrupt(f"signal {signum}")  # unwinds to the release in Launcher.__exit__

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)  # also when started with SIGINT ignored (a shell's &)
    try:
        with Launcher(a.command, settings, ray_settings, name=a.name, cancel=cancel) as launcher:
            if a.command == "serve":
                return _serve(launcher, a, rest, cancel)
            module = "jobs.retrain" if a.command == "retrain" else a.module
            result = launcher.run(module, rest, timeout_s=a.job_timeout,
                                  require_result=a.command == "retrain")
            sys.stdout.write(result.stdout)
            if not result.ok:
                sys.stderr.write(str(result.error) if result.error else result.stderr[-4000:])
            print(json.dumps({"gang": launcher.name, "exit_code": result.exit_code,
                              "ok": result.ok, "result": result.result, "reason": result.reason,
                              "restarts": result.restarts, "timed_out": result.timed_out,
                              "reserve_s": launcher.gang.reserve_s if launcher.gang else None}),
                  file=sys.stderr)
            return result.exit_code or (0 if result.ok else 1)
    except KeyboardInterrupt:
        print("interrupted: gang released", file=sys.stderr)
        return INTERRUPTED


def _serve(launcher: Any, a: argparse.Namespace, serve_args: list[str],
           cancel: threading.Event) -> int:
    from framestream.paths import state_dir

    endpoints_file = Path(a.endpoints or state_dir() / "endpoints.json")
    gang = launcher.serve(serve_args, endpoints_file, launcher.run_dir / "logs")
    print(json.dumps({"gang": launcher.name, "generation": gang.generation,
                      "endpoints_file": str(endpoints_file),
                      "reserve_s": launcher.gang.reserve_s}), flush=True)
    while not cancel.wait(1.0):  # Ctrl-C / SIGTERM end the wait; the watcher does the work
        if gang.error is not None:
            print(f"error: {gang.error}", file=sys.stderr)
            return SERVICE
    return OK


if __name__ == "__main__":
    sys.exit(main())
