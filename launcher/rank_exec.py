"""``mpirun ... python -m launcher.rank_exec MODULE ARGS``: give this rank its bundle's environment,
then become ``python -m MODULE ARGS`` (same pid, so mpirun's reports name the real program).

The launcher's one piece that runs where a rank runs, and only until ``exec``: mpirun's ``-x``
exports one value to every rank, and a gang needs a value per rank (``CUDA_VISIBLE_DEVICES`` from
the bundle, the node's interface). The launcher exports the whole table in one variable
(:data:`launcher.layout.RANK_ENV`: node address -> one row per local rank); each rank finds its
node among its own interface addresses and takes the row of its local rank, so the table never
depends on how mpirun numbered the nodes.
"""

from __future__ import annotations

import json
import os
import sys


def own_addresses() -> set[str]:
    import socket

    import psutil

    return {a.address for addrs in psutil.net_if_addrs().values() for a in addrs
            if a.family == socket.AF_INET}


def pick(table: dict[str, list[dict[str, str]]], addresses: set[str],
         local_rank: int) -> dict[str, str]:
    """This rank's row: the node whose address is one of ours, then the local rank's entry."""
    for node, rows in table.items():
        if node in addresses:
            if local_rank >= len(rows):
                raise RuntimeError(f"local rank {local_rank} on {node}, but its reservation "
                                   f"holds {len(rows)} bundles there")
            return rows[local_rank]
    if len(table) == 1:  # one node that answers under another address (NAT, a VIP)
        rows = next(iter(table.values()))
        return rows[local_rank] if local_rank < len(rows) else {}
    raise RuntimeError(f"this host ({sorted(addresses)}) holds none of the gang's bundles "
                       f"({sorted(table)})")


def main(argv: list[str]) -> None:
    if not argv:
        sys.exit("usage: python -m launcher.rank_exec MODULE [ARGS...]")
    table = json.loads(os.environ.get("FRAMESTREAM_GANG_RANK_ENV", "{}"))
    if table:
        local = int(os.environ.get("OMPI_COMM_WORLD_LOCAL_RANK", "0"))
        os.environ.update({str(k): str(v) for k, v in pick(table, own_addresses(), local).items()})
    os.execv(sys.executable, [sys.executable, "-m", *argv])


if __name__ == "__main__":
    main(sys.argv[1:])
