"""Real ``mpirun -n 2 python -m mpi_workers.serve`` ranks started while ``serving.json`` names a
version whose weights fail their checksum: they come up on the last good version, answer PING and
INFER with it, count the fallback, and answer a request for the bad version with a clear
MODEL_UNAVAILABLE error instead of dying."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import zmq

from etl.client import ClientSettings, RankClient, RankError
from models.registry import Registry
from framestream.wire import Message, Op, decode, encode
from tests.helpers.ranks import serving_ranks
from tests.helpers.registry import publish_random

pytestmark = [pytest.mark.mpi, pytest.mark.slow]


def corrupt_and_name(registry: Registry, version: str) -> None:
    """Flip one byte of ``version``'s weights after its checksum was taken and point
    serving.json at it (storage rot after a promotion, or a tool that skipped the check)."""
    weights = registry.root / version / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    path = registry.root / "serving.json"
    state = json.loads(path.read_text())
    path.write_text(json.dumps({**state, "version": version}))


def ping(endpoint: str) -> Message:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    try:
        sock.connect(endpoint)
        sock.send_multipart(encode(Message(Op.PING, "p")))
        assert sock.poll(30_000), f"no PONG from {endpoint} within 30 s"
        return decode(sock.recv_multipart())
    finally:
        sock.close()
        ctx.term()


def test_ranks_start_on_the_last_good_version_when_the_promoted_one_fails_its_checksum(
        tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry")
    v1 = publish_random(registry, 1)
    assert registry.promote(v1).promoted
    v2 = publish_random(registry, 2)
    assert registry.promote(v2, force=True).promoted
    corrupt_and_name(registry, v2)

    client = None
    with serving_ranks(tmp_path, registry.root) as ranks:
        published, proc, log = ranks.published, ranks.proc, ranks.log
        try:
            assert published.model_version == v1 and len(published.ranks) == 2
            for r in published.ranks:
                pong = ping(r.endpoint)
                assert pong.op is Op.PONG and pong.model == v1
                text = urllib.request.urlopen(r.metrics, timeout=10).read().decode()
                assert re.search(r'framestream_rank_model_fallbacks_total\{rank="%d",'
                                 r'reason="checksum_mismatch"\} 1\.0' % r.rank, text), text
                info = re.search(r'framestream_rank_model_info\{([^}]*)\}', text)
                assert info and f'version="{v1}"' in info.group(1) \
                    and f'named="{v2}"' in info.group(1), text

            client = RankClient(published, ClientSettings(chunk_frames=32, request_timeout_s=10),
                                refresh=ranks.read)
            images = np.random.default_rng(0).integers(0, 256, (96, 28, 28, 1), dtype=np.uint8)
            scores, version = client.infer(images, v1)
            assert version == v1 and scores.shape == (96, 10)
            with pytest.raises(RankError) as err:  # the driver asks for what cannot load
                client.infer(images[:4], v2)
            assert err.value.code == "MODEL_UNAVAILABLE" and "checksum" in str(err.value).lower()
            assert proc.poll() is None  # a per-request error, not a crash
            again, _ = client.infer(images, None)  # the default is the fallback version
            np.testing.assert_allclose(again, scores, atol=1e-6)
        finally:
            if client is not None:
                client.close()
    assert "checksum_mismatch" in log.read_text(errors="replace")
