"""Real ``mpirun -n 2 python -m mpi_workers.serve --runtime auto`` ranks on a trained-like
version: they serve it through ONNX Runtime (exported once, cached beside the weights), answer
real Fashion-MNIST frames with eager torch's classes (near-ties counted) and scores within the
parity tolerance, and say so in their metrics. A second version whose cached export verifies but
computes other scores is served with eager torch, and the metrics say why."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from etl.client import ClientSettings, RankClient
from models.onnx_export import export_name
from models.registry import Registry
from models.runtime import TOLERANCE, compare
from mpi_workers.inference import forward
from mpi_workers.model_cache import ModelCache
from tests.helpers.ranks import serving_ranks
from tests.helpers.runtime_models import publish, real_frames, write_wrong_export

pytestmark = [pytest.mark.mpi, pytest.mark.slow]


def _info(text: str, version: str) -> str:
    m = re.search(r'framestream_rank_runtime_info\{([^}]*version="%s"[^}]*)\} 1\.0' % version,
                  text)
    assert m, text
    return m.group(1)


def test_ranks_serve_through_onnxruntime_with_eager_s_classes(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry")
    v1 = publish(registry, seed=3)
    assert registry.promote(v1).promoted
    v2 = publish(registry, seed=4)  # published, not promoted: loaded when a request names it
    write_wrong_export(registry, v2)

    client = None
    with serving_ranks(tmp_path, registry.root, extra=("--runtime", "auto")) as ranks:
        published, proc, log = ranks.published, ranks.proc, ranks.log
        try:
            assert published.model_version == v1 and len(published.ranks) == 2
            for r in published.ranks:
                text = urllib.request.urlopen(r.metrics, timeout=10).read().decode()
                info = _info(text, v1)
                assert 'runtime="onnxruntime"' in info and 'fallback_reason=""' in info, text
            assert (registry.root / v1 / export_name(32)).is_file()  # cached beside the weights

            frames = real_frames(1024)
            client = RankClient(published, ClientSettings(chunk_frames=100, request_timeout_s=30),
                                refresh=ranks.read)
            scores, version = client.infer(frames, v1)
            assert version == v1 and scores.shape == (1024, 10)
            eager = forward(ModelCache(str(registry.root), "cpu", default=v1).get(v1), frames)
            parity = compare(eager, scores)
            assert parity.class_changes == 0 and parity.max_abs_diff <= TOLERANCE, parity.describe()
            assert parity.max_abs_diff > 0  # the ranks did not run eager torch
            changed = int((eager.argmax(1) != scores.argmax(1)).sum())
            assert changed == parity.near_tie_flips <= parity.near_ties

            wrong_scores, version = client.infer(frames[:200], v2)  # every rank loads v2 now
            assert version == v2
            cache = ModelCache(str(registry.root), "cpu", default=v2)
            eager_v2 = forward(cache.get(v2), frames[:200])
            np.testing.assert_allclose(wrong_scores, eager_v2, rtol=0, atol=1e-6)  # eager torch
            seen = 0
            for r in published.ranks:
                text = urllib.request.urlopen(r.metrics, timeout=10).read().decode()
                if f'version="{v2}"' not in text:
                    continue  # this rank got no chunk of the v2 request
                info = _info(text, v2)
                assert 'runtime="eager"' in info and 'fallback_reason="parity"' in info, text
                assert re.search(r'framestream_rank_runtime_fallbacks_total\{rank="%d",'
                                 r'reason="parity"\} 1\.0' % r.rank, text), text
                seen += 1
            assert seen >= 1
            assert proc.poll() is None
        finally:
            if client is not None:
                client.close()
    assert "serves eager torch instead of auto (parity" in log.read_text(errors="replace")
