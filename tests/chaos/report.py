"""``python -m tests.chaos.report [--profile ci|long]``: the chaos table (Markdown) from
``.state/chaos/results.json`` and the fuzz figures from ``.state/chaos/fuzz.json``, as the README
shows them."""

from __future__ import annotations

import argparse
import json
import sys

from tests.chaos.harness import RESULTS
from tests.chaos.test_fuzz import FIGURES

ORDER = ("rank_kill", "all_ranks_kill", "rank_sigstop", "driver_kill", "python_worker_kill",
         "broker_outage", "bad_checksum_promotion", "bad_promotion_relaunch", "retrain_kill",
         "hostile_input", "poison_pill", "hostile_peer")


def _s(v: object) -> str:
    return "—" if v is None else f"{v:g}" if isinstance(v, float) else str(v)


def table(profile: str) -> list[str]:
    rows = json.loads(RESULTS.read_text())
    out = ["| fault | frames in | predictions | dead letters | duplicates (all identical) | "
           "conserved | recovery s | longest stall s | p50 latency before s | notes |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for fault in ORDER:
        r = rows.get(f"{profile}:{fault}")
        if r is None:
            continue
        notes = {
            "rank_kill": f"gang relaunched, new generation after {_s(r.get('relaunch_s'))} s",
            "all_ranks_kill": f"gang relaunched after {_s(r.get('relaunch_s'))} s",
            "rank_sigstop": f"held {_s(r.get('hold_s'))} s; requests re-sent to the other rank, "
                            f"no relaunch",
            "driver_kill": f"driver back on its checkpoint after {_s(r.get('restart_s'))} s",
            "python_worker_kill": f"{r.get('lost_tasks')} task lost and retried",
            "broker_outage": f"down {_s(r.get('outage_s'))} s, answering again after "
                             f"{_s(r.get('back_after_s'))} s",
            "bad_checksum_promotion": f"served by {r.get('versions')}; the bad one never",
            "bad_promotion_relaunch": f"refused by the driver after "
                                      f"{_s(r.get('refused_after_s'))} s; killed then, gang "
                                      f"relaunched after {_s(r.get('relaunch_s'))} s on "
                                      f"the last good version ({r.get('fallbacks_counted')} "
                                      f"rank fallbacks counted); served by {r.get('versions')}",
            "retrain_kill": f"killed after epoch {r.get('epochs_before_kill')}/3; failure "
                            f"recorded after {_s(r.get('failure_recorded_after_s'))} s; resumed "
                            f"run {_s(r.get('resumed_run_s'))} s",
            "hostile_input": f"{r.get('hostile_kinds')} hostile kinds → DLQ with exact reasons, "
                             f"{r.get('valid_kinds')} valid kinds classified; rank counted "
                             f"{_s(r.get('rank_counted_malformed'))} malformed messages and "
                             f"{_s(r.get('rank_counted_refused'))} refused connections; "
                             f"slowest batch {_s(r.get('max_batch_s'))} s",
            "poison_pill": "dead letters of " + " and ".join(
                f"{b:,}" for b in r.get("pill_bytes", [])) + " bytes written whole; the stream "
                "never stopped",
            "hostile_peer": f"{r.get('hostile_messages')} hostile messages in "
                            f"{r.get('bursts')} bursts, every one answered; "
                            f"{_s(r.get('rank_counted_forbidden'))} control ops refused "
                            f"FORBIDDEN; {r.get('restarts')} relaunches"}[fault]
        recovery = None if fault in ("hostile_input", "poison_pill") else r["recovery_s"]
        stall = None if fault in ("hostile_input", "poison_pill") else r["stall_s"]
        out.append(f"| {r['what']} | {r['frames_in']} | {r['predictions']} | "
                   f"{r['dead_letters']} | {r['duplicates']} | {'yes' if r['conserved'] else 'NO'}"
                   f" | {_s(recovery)} | {_s(stall)} | {_s(r['baseline_latency_p50_s'])} | "
                   f"{notes} |")
    return out


def fuzz() -> list[str]:
    figures = json.loads(FIGURES.read_text())
    out = ["| target | seconds | inputs tried | crashes | outcomes (top) |", "|---|---|---|---|---|"]
    for name, f in sorted(figures.items()):
        top = ", ".join(f"{k} {v}" for k, v in list(f["outcomes"].items())[:4])
        out.append(f"| {name} | {f['seconds']} | {f['inputs']} | {f['crashes']} | {top} |")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.chaos.report")
    p.add_argument("--profile", default="ci", choices=("ci", "long"))
    a = p.parse_args(argv)
    try:
        print("\n".join(table(a.profile)))
        print()
        print("\n".join(fuzz()))
    except FileNotFoundError as exc:
        print(f"no results yet ({exc.filename}): run make chaos or pytest tests/chaos",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
