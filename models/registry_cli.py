"""``python -m models.registry [--root R] list | show V | promote V [--margin M] [--force] | rollback``.

Exit status: 0 on success; 1 when ``promote`` keeps the version unserved (the gate said no);
2 on an error (unknown version, checksum mismatch, nothing to roll back).
"""

from __future__ import annotations

import argparse
import json

from framestream.exits import NOT_DONE, OK, entry_point
from framestream.flags import add_settings, from_args
from framestream.logs import setup_logging
from models.registry import Registry, RegistrySettings


def _table(reg: Registry) -> str:
    serving = reg.serving()
    rows = [("", "version", "created", "holdout acc", "holdout", "net", "parent", "backend×n")]
    for m in reg.versions():
        rows.append(("*" if m.version == serving else "", m.version, m.created,
                     f"{m.holdout_accuracy:.4f}", str(m.metrics.get("holdout", "")), m.net,
                     m.parent or "-", f"{m.backend}×{m.world_size}"))
    if len(rows) == 1:
        return f"registry {reg.root} is empty"
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines + [f"(* = serving; root {reg.root})"])


@entry_point
def run(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.registry",
                                     description="List, inspect, promote and roll back model versions.")
    add_settings(parser, RegistrySettings, "root")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="every version, * marks the serving one")
    show = sub.add_parser("show", help="print a version's manifest as JSON")
    show.add_argument("version")
    promote = sub.add_parser("promote", help="serve a version if it passes the gate")
    promote.add_argument("version")
    add_settings(promote, RegistrySettings, "margin")
    promote.add_argument("--force", action="store_true", help="skip the accuracy gate (never the checksum)")
    sub.add_parser("rollback", help="serve the previously served version again")
    args = parser.parse_args(argv)
    setup_logging("WARNING")

    settings = from_args(args, RegistrySettings)
    reg = Registry(settings.root)
    if args.cmd == "list":
        print(_table(reg))
    elif args.cmd == "show":
        m = reg.manifest(args.version)
        print(json.dumps({**m.to_dict(), "serving": reg.serving() == m.version}, indent=2))
    elif args.cmd == "promote":
        d = reg.promote(args.version, margin=settings.margin, force=args.force)
        print(json.dumps({"version": args.version, "promoted": d.promoted, "reason": d.reason,
                          "serving": reg.serving()}))
        return OK if d.promoted else NOT_DONE
    elif args.cmd == "rollback":
        print(json.dumps({"serving": reg.rollback()}))
    return OK


if __name__ == "__main__":
    raise SystemExit(run())
