"""A hostile peer on the ranks' sockets while the real stream runs (issue 14, item 1).

A local stranger (any process that can reach 127.0.0.1) sends every rank crafted tensor specs
(zero and huge dimensions, every dtype, INFER and TRAIN, with empty buffers: the 100-byte message
that used to MPI_Abort a gang), SHUTDOWN and END without the gang's control token or with a
guessed one, and CANCELs for ids that are not its own. Every one must be answered ERROR
(SHUTDOWN: FORBIDDEN; END, a training op: BAD_OP; a CANCEL: ACK with nothing cancelled), both
ranks must keep answering, the stream must conserve every frame and nothing may be relaunched
because of it.
"""

from __future__ import annotations

import re
import threading
import urllib.request
from collections import Counter
from pathlib import Path

import msgpack
import pytest
import zmq

from framestream.wire import DTYPES, VERSION, Message, Op, decode, encode
from tests.chaos.harness import ChaosStream, Profile, assert_conserved, record

pytestmark = [pytest.mark.chaos, pytest.mark.spark, pytest.mark.kafka, pytest.mark.mpi,
              pytest.mark.slow]

SHAPES = ([0, 2**39, 2**39], [2**39, 2**39, 0], [0, 2**63], [0] + [2**31 - 1] * 7, [1] * 9,
          [-1, 28, 28, 1], [True, 28], [0, 28.0])


def burst() -> list[list[bytes]]:
    """One round of hostile messages: crafted specs for every dtype, then control ops."""
    out = []
    for i, (dtype, shape) in enumerate((d, s) for d in sorted(DTYPES) for s in SHAPES):
        op = "INFER" if i % 2 == 0 else "TRAIN"
        header = {"v": VERSION, "op": op, "id": f"evil-{i}", "model": None, "ttl": 30.0,
                  "tensors": [{"dtype": dtype, "shape": shape}], "meta": {}}
        out.append([msgpack.packb(header), b""])
    for op in (Op.SHUTDOWN, Op.END):
        out += [encode(Message(op, f"{op.value}-{k}", meta=meta))
                for k, meta in enumerate(({}, {"token": ""}, {"token": "guess"}, {"token": 1}))]
    out.append(encode(Message(Op.CANCEL, "c", meta={"request": "0-0"})))
    return out


def attack(endpoint: str, stop: threading.Event, seen: Counter) -> None:
    """Bursts at one rank until ``stop``; every reply read and tallied; PING after each burst."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(endpoint)
    try:
        while not stop.is_set():
            messages = burst()
            for parts in messages:
                sock.send_multipart(parts)
            sock.send_multipart(encode(Message(Op.PING, "alive")))
            got = 0
            while got < len(messages) + 1:
                if not sock.poll(30_000):
                    seen["unanswered_bursts"] += 1
                    break
                reply = decode(sock.recv_multipart())
                got += 1
                if reply.op is Op.ERROR:
                    seen[f"ERROR:{reply.meta.get('code')}"] += 1
                else:
                    seen[reply.op.value if reply.id != "alive" else "PONG:alive"] += 1
            seen["sent"] += len(messages)
            seen["bursts"] += 1
            stop.wait(0.5)  # a burst every half second all through the stream
    finally:
        sock.close(0)
        ctx.term()


def test_hostile_peer_burst_during_the_stream(kafka_bootstrap: str, topics: dict[str, str],
                                              tmp_path: Path, prof: Profile) -> None:
    run = ChaosStream(kafka_bootstrap, topics, tmp_path, prof)
    run.start()
    stop = threading.Event()
    tallies = [Counter(), Counter()]
    try:
        ranks = run.ranks()
        run.produce()
        run.settle()
        run.fault_start()
        attackers = [threading.Thread(target=attack, args=(r["endpoint"], stop, t), daemon=True)
                     for r, t in zip(ranks, tallies)]
        for a in attackers:
            a.start()
        b = run.finish()
        stop.set()
        for a in attackers:
            a.join(60)
        run.fault_end()
        metrics = [urllib.request.urlopen(r["metrics"], timeout=10).read().decode() for r in ranks]
    finally:
        stop.set()
        code = run.stop()
    assert code == 0, run.log_tail()
    assert_conserved(b, run.total)
    stats = run.stats()
    assert stats["rank_restarts"] == 0 and run.generation() == 1  # nothing relaunched
    for t in tallies:
        assert t["bursts"] >= 2 and t["unanswered_bursts"] == 0, t
        assert t["PONG:alive"] == t["bursts"], t  # the rank answered after every burst
        assert t["ERROR:FORBIDDEN"] == 4 * t["bursts"], t  # no SHUTDOWN obeyed
        assert t["ERROR:BAD_OP"] == 4 * t["bursts"], t  # END is no serving op at all
        assert t["ACK"] == t["bursts"] and t.get("RESULT", 0) == 0, t  # the CANCEL: nothing
    forbidden = [sum(float(v) for v in re.findall(
        r'^framestream_rank_refused_total\{[^}]*code="FORBIDDEN"[^}]*\} (\S+)$', m, re.M))
        for m in metrics]
    assert all(f > 0 for f in forbidden), forbidden
    sent = sum(t["sent"] for t in tallies)
    record("hostile_peer", f"a stranger sends both ranks crafted specs ({len(SHAPES)} shapes x "
           f"{len(DTYPES)} dtypes, empty buffers) and SHUTDOWN/END without the token, every "
           f"0.5 s all through the stream", prof, b, hostile_messages=sent,
           bursts=sum(t["bursts"] for t in tallies), rank_counted_forbidden=sum(forbidden),
           restarts=stats["rank_restarts"])
