"""A registry version's net as an ONNX graph, exported once and kept beside its weights.

The graph is the whole model step of a rank: uint8 NHWC frames of one fixed block shape
``[rows, H, W, C]`` in, class probabilities out (the spec's normalisation, the net and the
softmax), so the runtime that runs it does everything :func:`mpi_workers.inference.forward` does
eagerly. The shape is fixed on purpose: it is what keeps a frame's scores independent of the other
frames in its block (see :mod:`mpi_workers.inference`).

Cached next to the version, checksummed like the weights::

    v0001/export-r32.onnx         the graph (protobuf; weights inside; no pickle)
    v0001/export-r32.onnx.json    {"sha256": of the .onnx, "weights_sha256": the manifest's, ...}

A cached file is used only when its sha256 matches the sidecar and the sidecar matches what would
be exported now (the same weights, rows, opset and torch build); anything else -- missing, a bad
checksum, stale -- is exported again under the registry's writer lock, so concurrent ranks export
once. A registry a rank cannot write to gets an export in memory (logged; start-up pays it each
time).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import warnings
from typing import TYPE_CHECKING, Any

from framestream.atomic import write_atomic
from models.spec import PreprocessSpec

if TYPE_CHECKING:
    from torch import nn

    from models.registry import Manifest, Registry

log = logging.getLogger(__name__)

#: ONNX opset of the export (supported by onnxruntime 1.31's CPU execution provider).
OPSET = 17
#: Bumped when what is exported changes (the wrapper below), so old caches are redone.
FORMAT = 1


def export_name(rows: int) -> str:
    return f"export-r{rows}.onnx"


def _served(net: "nn.Module", spec: PreprocessSpec) -> "nn.Module":
    """``net`` behind the spec's normalisation and a softmax: uint8 NHWC -> probabilities."""
    import torch
    from torch import nn

    class Served(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net
            self.register_buffer("mean", torch.tensor(spec.mean, dtype=torch.float32)
                                 .view(1, -1, 1, 1))
            self.register_buffer("std", torch.tensor(spec.std, dtype=torch.float32)
                                 .view(1, -1, 1, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            # the same operations, in the same order, as models.spec.normalize + inference.forward
            x = x.permute(0, 3, 1, 2).to(torch.float32).div(255.0)
            x = x.sub(self.mean).div(self.std)
            return torch.softmax(self.net(x).float(), dim=1)

    return Served().eval()


def export_onnx(net: "nn.Module", spec: PreprocessSpec, rows: int) -> bytes:
    """The ONNX bytes of ``net`` for blocks of exactly ``rows`` frames (TorchScript exporter)."""
    import torch

    model = _served(net.cpu().eval(), spec)
    sample = torch.zeros((rows, *spec.shape), dtype=torch.uint8)
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # torch 2.9 warns that the TorchScript exporter is deprecated in favour of dynamo (which
        # would need onnxscript), and its own internals call deprecated helpers; torch is pinned
        # and this exporter handles these nets, so only deprecations are silenced, only here.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (sample,), buf, dynamo=False, opset_version=OPSET,
                          input_names=["frames"], output_names=["probs"],
                          do_constant_folding=True)
    return buf.getvalue()


def _expected(manifest: "Manifest", rows: int) -> dict[str, Any]:
    import torch

    return {"format": FORMAT, "weights_sha256": manifest.sha256, "rows": rows, "opset": OPSET,
            "torch": torch.__version__}


def _cached(registry: "Registry", version: str, expected: dict[str, Any]) -> tuple[bytes | None, str]:
    """(the cached bytes, "") when the cache is good, else (None, why not)."""
    path = registry.root / version / export_name(expected["rows"])
    sidecar = path.with_name(path.name + ".json")
    try:
        meta = json.loads(sidecar.read_text())
        data = path.read_bytes()
    except FileNotFoundError:
        return None, "not exported yet"
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        return None, f"unreadable ({type(exc).__name__}: {exc})"
    if not isinstance(meta, dict):
        return None, f"{sidecar.name} is not an object"
    stale = [k for k, v in expected.items() if meta.get(k) != v]
    if stale:
        return None, f"stale ({', '.join(stale)} changed)"
    actual = hashlib.sha256(data).hexdigest()
    if actual != meta.get("sha256"):
        return None, f"checksum mismatch (sidecar {meta.get('sha256')}, file {actual})"
    return data, ""


def cached_export(registry: "Registry", version: str, manifest: "Manifest", net: "nn.Module",
                  rows: int) -> bytes:
    """The ONNX bytes of ``version`` for ``rows``-frame blocks, from the cache when it verifies,
    else exported now and cached (see the module docstring)."""
    expected = _expected(manifest, rows)
    data, why = _cached(registry, version, expected)
    if data is not None:
        log.info("ONNX export of %s (%d rows) from cache, sha256 verified", version, rows)
        return data
    path = registry.root / version / export_name(rows)
    try:
        with registry._locked():  # the registry's writer lock: one rank exports, the rest wait
            data, why_now = _cached(registry, version, expected)  # another rank may have done it
            if data is not None:
                return data
            log.info("exporting %s to ONNX (%d rows): cache %s", version, rows, why_now)
            data = export_onnx(net, PreprocessSpec.from_dict(manifest.spec), rows)
            meta = {**expected, "sha256": hashlib.sha256(data).hexdigest()}
            write_atomic(path, data)
            write_atomic(path.with_name(path.name + ".json"), json.dumps(meta, indent=2) + "\n")
            return data
    except OSError as exc:  # a read-only registry (permissions, read-only mount)
        log.warning("cannot cache the ONNX export of %s in %s (%s): exporting in memory; every "
                    "start pays the export", version, path.parent, exc)
        return export_onnx(net, PreprocessSpec.from_dict(manifest.spec), rows)
