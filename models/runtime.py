"""Which runtime runs a rank's model step, and the parity gate a fast runtime must pass.

``eager`` is torch as the net was trained; ``onnxruntime`` runs the version's ONNX export
(:mod:`models.onnx_export`) on ONNX Runtime's CPU execution provider; ``auto`` (the serving
default) is the fastest one that passes the gate on this machine, measured in the README's "Model
runtime" part: ONNX Runtime on a CPU, eager torch on a GPU.

The gate runs at load, per version: the same holdout frames (:func:`gate_frames`) through eager
torch and through the fast runtime, both in the ranks' fixed blocks. It passes when every score is
within :data:`TOLERANCE` of eager's and every frame keeps eager's class, except near-ties -- frames
whose two best eager scores are within :data:`TOLERANCE` of each other, where any two float
implementations may disagree; those are counted. A runtime that fails it, or cannot be built, is
not used: the rank serves eager torch and says why (log + ``framestream_rank_runtime_info``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from models.spec import PreprocessSpec

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "eager", "onnxruntime")
#: The largest |score difference| the gate accepts, and the top-two gap below which a frame is a
#: near-tie (scores are softmax probabilities in [0, 1]).
TOLERANCE = 1e-4
#: Frames in the holdout batch of the gate.
GATE_FRAMES = 512
#: Why a rank serves eager torch although another runtime was asked for.
FALLBACK_REASONS = ("unavailable", "export_failed", "parity", "device")


@dataclass(frozen=True)
class Parity:
    """A fast runtime's scores against eager torch's on the same frames."""

    frames: int
    max_abs_diff: float
    near_ties: int          # frames whose two best eager scores are within the tolerance
    near_tie_flips: int     # near-ties whose class changed (allowed)
    class_changes: int      # frames that are not near-ties whose class changed (not allowed)
    tolerance: float = TOLERANCE

    @property
    def ok(self) -> bool:
        return self.class_changes == 0 and self.max_abs_diff <= self.tolerance

    def describe(self) -> str:
        return (f"{self.frames} frames: max |score diff| {self.max_abs_diff:.2e} (limit "
                f"{self.tolerance:g}), {self.class_changes} class changes, {self.near_ties} "
                f"near-ties ({self.near_tie_flips} flipped)")


def compare(eager: np.ndarray, other: np.ndarray, tolerance: float = TOLERANCE) -> Parity:
    """How ``other``'s scores ``[frames, classes]`` differ from ``eager``'s (see :class:`Parity`)."""
    if eager.shape != other.shape:
        raise ValueError(f"score shapes differ: eager {eager.shape}, other {other.shape}")
    n = len(eager)
    if n == 0:
        return Parity(0, 0.0, 0, 0, 0, tolerance)
    diff = np.abs(eager.astype(np.float64) - other.astype(np.float64))
    max_diff = float(diff.max()) if np.isfinite(diff).all() else float("inf")
    top2 = np.sort(eager, axis=1)[:, -2:] if eager.shape[1] > 1 else np.zeros((n, 2))
    near = (top2[:, 1] - top2[:, 0]) <= tolerance
    changed = eager.argmax(axis=1) != other.argmax(axis=1)
    return Parity(n, max_diff, int(near.sum()), int((changed & near).sum()),
                  int((changed & ~near).sum()), tolerance)


def gate_frames(spec: PreprocessSpec, n: int = GATE_FRAMES) -> np.ndarray:
    """The gate's holdout batch: uint8 frames of ``spec``'s shape, the same on every rank.

    Real Fashion-MNIST test frames (the last ``n``; training learns from the train split) when the spec is
    theirs and the data is installed; otherwise frames made from a fixed seed -- smooth gradients
    and blobs as well as noise, so the net's activations cover more than one regime.
    """
    if spec.shape == (28, 28, 1):
        from framestream import fashion_mnist
        from framestream.errors import ServiceError

        try:
            images, _ = fashion_mnist.load("test")
            return np.ascontiguousarray(images[-n:].reshape(-1, *spec.shape))
        except (ServiceError, OSError, ValueError) as exc:
            log.info("gate frames: Fashion-MNIST not available (%s); using seeded frames", exc)
    rng = np.random.default_rng(20261201)
    h, w, c = spec.shape
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    frames = np.empty((n, h, w, c), np.uint8)
    for i in range(n):
        kind = i % 3
        if kind == 0:
            img = rng.integers(0, 256, (h, w, c))
        else:
            a, b, cx, cy, r = rng.uniform(-1, 1, 5)
            img = 127.5 + 127.5 * (np.sin(4 * a * xx + 4 * b * yy) if kind == 1 else
                                   np.tanh(4 * (abs(r) - np.hypot(xx - cx, yy - cy))))[..., None]
            img = np.broadcast_to(img, (h, w, c))
        frames[i] = np.clip(img, 0, 255).astype(np.uint8)
    return frames


class OrtRunner:
    """One ONNX Runtime CPU session of a fixed-block export: ``run(uint8 block) -> probabilities``.

    Sequential execution with ``threads`` intra-op threads (the rank's torch thread count) that
    sleep rather than spin between calls: the ranks share their cores with Spark and each other.
    """

    name = "onnxruntime"

    def __init__(self, model: bytes, threads: int) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, int(threads))
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.log_severity_level = 3  # errors only: its warnings go to stderr, not our logging
        self.threads = opts.intra_op_num_threads
        self.session = ort.InferenceSession(model, sess_options=opts,
                                            providers=["CPUExecutionProvider"])
        inp = self.session.get_inputs()[0]
        self._input = inp.name
        self.rows = int(inp.shape[0])

    def run(self, block: np.ndarray) -> np.ndarray:
        if len(block) != self.rows:
            raise ValueError(f"the export takes blocks of {self.rows} frames, got {len(block)}")
        return self.session.run(None, {self._input: block})[0]


def available() -> str:
    """"" when ONNX Runtime imports, else why not."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        return f"onnxruntime is not installed ({exc})"
    return ""


@dataclass(frozen=True)
class RuntimeChoice:
    """What runs a version's model step, what was asked for, and why they differ (if they do)."""

    requested: str
    runtime: str
    fallback_reason: str = ""       # one of FALLBACK_REASONS, or "" when no fallback
    detail: str = ""
    parity: Parity | None = None

    @property
    def fell_back(self) -> bool:
        return bool(self.fallback_reason)
