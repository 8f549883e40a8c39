"""Registry versions for the runtime tests: trained-like Fashion-MNIST nets (real BatchNorm
statistics, confident softmax) and a deliberately wrong ONNX export with a valid checksum."""

from __future__ import annotations

import copy
import hashlib
import json

import numpy as np
import torch

from framestream import fashion_mnist
from models.nets import DEFAULT_SPECS, build
from models.onnx_export import _expected, export_name, export_onnx
from models.registry import Registry
from models.spec import normalize

SPEC = DEFAULT_SPECS["fashion_cnn"]


def real_frames(n: int) -> np.ndarray:
    """The first ``n`` Fashion-MNIST test frames, uint8 NHWC, read-only like frames off a socket."""
    images, _ = fashion_mnist.load("test")
    return images[:n].reshape(-1, *SPEC.shape)


def trained_like_net(seed: int = 0) -> torch.nn.Module:
    """Weights at the scale of a served model without minutes of training: BatchNorm statistics
    taken from real frames and a last layer scaled so the softmax is confident, like a trained
    net's (top scores near 1), not near-uniform."""
    torch.manual_seed(seed)
    net = build("fashion_cnn")
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average over the pass below
    net.train()
    with torch.no_grad():
        net(normalize(torch.from_numpy(real_frames(512).copy()), SPEC))
        net.classifier[-1].weight.mul_(40.0)
    return net.eval()


def publish(registry: Registry, seed: int = 0) -> str:
    return registry.publish(trained_like_net(seed), net="fashion_cnn", net_kwargs={}, spec=SPEC,
                            metrics={"holdout_accuracy": 0.5, "holdout": "t"}, parent=None,
                            backend="none", world_size=1, data={}).version


def write_wrong_export(registry: Registry, version: str, rows: int = 32) -> bytes:
    """Cache, for ``version``, the export of a *different* net (class 0's bias raised by 2) with a
    sidecar whose checksum and fields are right: a file that verifies but computes other scores.
    Only the parity gate can catch it."""
    net, manifest = registry.load(version)
    wrong = copy.deepcopy(net)
    with torch.no_grad():
        wrong.classifier[-1].bias[0] += 2.0
    data = export_onnx(wrong, SPEC, rows)
    path = registry.root / version / export_name(rows)
    path.write_bytes(data)
    meta = {**_expected(manifest, rows), "sha256": hashlib.sha256(data).hexdigest()}
    path.with_name(path.name + ".json").write_text(json.dumps(meta))
    return data
