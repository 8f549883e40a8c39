"""What one retraining run is: its settings (``FRAMESTREAM_TRAIN_*``) and this invocation's options.

Apart from :mod:`mpi_workers.train` (the rank loop) so that what rank 0 does with the registry
(:mod:`mpi_workers.train_publish`) can take them without importing the loop that calls it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from framestream.paths import state_dir
from framestream.settings import check, settings_section
from mpi_workers.backends import BACKENDS

HOLDOUT = "fashion-mnist/test"
AUGMENT = ("none", "flip", "flip-crop")
SOURCES = ("fashion-mnist", "zmq")


@settings_section("train")
@dataclass(frozen=True)
class TrainSettings:
    """One retraining run. ``FRAMESTREAM_TRAIN_<NAME>``; the CLI flags of jobs/retrain.py win."""

    backend: str = field(default="auto", metadata=check(lambda v: v in BACKENDS, f"one of {BACKENDS}"))
    net: str = field(default="fashion_cnn", metadata=check(lambda v: v == "fashion_cnn",
                                                           "fashion_cnn (the net for 28x28x1 frames)"))
    epochs: int = field(default=8, metadata=check(lambda v: 1 <= v <= 1000, "1..1000"))
    batch_size: int = field(default=128, metadata=check(lambda v: 1 <= v <= 65536, "1..65536 per rank"))
    lr: float = field(default=3e-3, metadata=check(lambda v: 0 < v <= 10, "0 < lr <= 10"))
    optimizer: str = field(default="adam", metadata=check(lambda v: v in ("adam", "sgd"), "adam or sgd"))
    seed: int = field(default=0, metadata=check(lambda v: 0 <= v < 2**31, "0..2^31-1"))
    threads: int = field(default=0, metadata=check(lambda v: v >= 0, ">= 0 (0 = cores // ranks)"))
    augment: str = field(default="none", metadata=check(lambda v: v in AUGMENT, f"one of {AUGMENT}"))
    checkpoint_dir: Path = field(default_factory=lambda: state_dir() / "retrain" / "checkpoints")
    registry: Path | None = None    # None: FRAMESTREAM_REGISTRY_ROOT / <state>/registry
    margin: float = field(default=0.0, metadata=check(lambda v: -1 <= v <= 1, "-1..1"))
    max_train: int = field(default=0, metadata=check(lambda v: v >= 0, ">= 0 (0 = all 60000)"))
    holdout_limit: int = field(default=0, metadata=check(lambda v: v >= 0, ">= 0 (0 = all 10000)"))
    target: float = field(default=0.92, metadata=check(lambda v: 0 < v <= 1, "0..1"))
    timeout_s: float = field(default=120.0, metadata=check(lambda v: v > 0, "> 0 seconds"))
    source: str = field(default="fashion-mnist", metadata=check(
        lambda v: v in SOURCES, f"one of {SOURCES}"))
    feed_endpoints: Path = field(default_factory=lambda: state_dir() / "train-endpoints.json")
    feed_timeout_s: float = field(default=600.0, metadata=check(lambda v: v > 0, "> 0 seconds"))
    data_range: str = ""            # what was fed (--source zmq), recorded in the manifest


@dataclass(frozen=True)
class RunOptions:
    """What this invocation does beyond the settings."""

    resume: bool = False            # continue from <checkpoint_dir>/last.pt when it exists
    promote: bool = True            # pass the new version through the promotion gate
    warm_start: bool = False        # start from the serving version's weights (its parent)
    stop_after: int = 0             # stop after this many epochs of this run, keep the checkpoint
    plot: Path | None = None
    progress: bool = True
