"""The ranks' forward pass: uint8 NHWC frames -> float32 class probabilities, batch-invariant.

A frame's scores must not depend on which other frames share its forward pass: a replay after a
crash need not batch the same way (other request sizes, other ``--max-batch``, another rank's
queue), and the README promises that a replayed prediction is the same record. Float addition is
not associative, and the kernels torch picks for a convolution or a matrix product -- with their
blocking, vector widths and the order in which they add -- depend on the shape of the input. So
the net always sees one shape: frames go through in blocks of exactly :func:`forward_rows` rows,
the last block padded with zero frames whose scores are dropped. With the shape fixed, the same
frame gives the same bits at any row of any block, next to any other frames (checked on
Fashion-MNIST in ``tests/unit/test_inference.py``).

What the guarantee needs stays the same between a run and its replay: the model version (pinned
per micro-batch), the device kind, the runtime (``--runtime``; eager torch or ONNX Runtime, see
:mod:`models.runtime`) and its build, and the rank's thread count (``--threads``, default
``cores // ranks on the host``). ONNX Runtime runs the same fixed blocks through a fixed-shape
export, so the property holds through it too (``tests/unit/test_runtime.py``).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np


class Servable(Protocol):
    """What the forward pass needs of a loaded model (:class:`mpi_workers.model_cache.LoadedModel`
    has it; named structurally so that the model cache, which runs the parity gate through this
    module, and this module do not import each other)."""

    net: Any
    spec: Any
    device: str
    runner: Any

#: Rows per forward pass on a CPU. Measured with the Fashion-MNIST CNN on this project's 2-core
#: machines (README "Semantics"): below it the per-call overhead dominates, above it the padding
#: of small requests costs more than larger blocks gain.
CPU_ROWS = 32
#: On a GPU a block of 256 small frames costs about what one does: pad to a full block.
CUDA_ROWS = 256


def forward_rows(device: str) -> int:
    """The fixed number of rows of every forward pass on ``device``."""
    return CUDA_ROWS if str(device).startswith("cuda") else CPU_ROWS


def forward(model: Servable, images: np.ndarray, max_batch: int | None = None) -> np.ndarray:
    """uint8 NHWC frames -> float32 class probabilities ``[len(images), classes]``.

    Runs in blocks of :func:`forward_rows` rows whatever ``len(images)`` is, so each frame's
    scores are the same bits in any batch. ``max_batch`` (the rank's ``--max-batch``) only decides
    how many frames the rank gathers per call; it does not change the forward shape.
    """
    import torch

    from models.spec import normalize

    del max_batch  # the forward shape is fixed on purpose: see the module docstring
    n = len(images)
    classes = len(model.spec.class_names) or 1
    if n == 0:
        return np.zeros((0, classes), np.float32)
    rows = forward_rows(model.device)
    out: np.ndarray | None = None
    block = np.zeros((rows, *images.shape[1:]), np.uint8)  # also takes read-only socket buffers
    with torch.inference_mode():
        for start in range(0, n, rows):
            part = images[start:start + rows]
            block[:len(part)] = part
            block[len(part):] = 0
            if model.runner is not None:  # a fast runtime that passed the parity gate at load
                probs = model.runner.run(block)[:len(part)]
            else:
                x = torch.from_numpy(block).to(model.device)
                logits = model.net(normalize(x, model.spec))
                probs = torch.softmax(logits.float(), dim=1)[:len(part)].cpu().numpy()
            if out is None:
                out = np.empty((n, probs.shape[1]), np.float32)
            out[start:start + len(part)] = probs
    assert out is not None
    return out
