"""What one retraining run is: its settings (``FRAMESTREAM_TRAIN_*``) and this invocation's options.

Apart from :mod:`mpi_workers.train` (the rank loop) so that what rank 0 does with the registry
(:mod:`mpi_workers.train_publish`) can take them without importing the loop that calls it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from framestream.paths import state_dir
from framestream.settings import Section, section, setting
from mpi_workers.backends import BACKENDS

HOLDOUT = "fashion-mnist/test"
AUGMENT = ("none", "flip", "flip-crop")
SOURCES = ("fashion-mnist", "zmq")


class TrainSettings(Section):
    """One retraining run. ``FRAMESTREAM_TRAIN_<NAME>``; the CLI flags of jobs/retrain.py win."""

    model_config = section("train")

    backend: str = setting("auto", "data-parallel backend (auto = Horovod when importable, "
                                   "else torch.distributed)",
                           ok=lambda v: v in BACKENDS, expected=f"one of {BACKENDS}")
    net: str = setting("fashion_cnn", "the net to train", ok=lambda v: v == "fashion_cnn",
                       expected="fashion_cnn (the net for 28x28x1 frames)")
    epochs: int = setting(8, "epochs of one run", ok=lambda v: 1 <= v <= 1000, expected="1..1000")
    batch_size: int = setting(128, "samples per step per rank", ok=lambda v: 1 <= v <= 65536,
                              expected="1..65536 per rank")
    lr: float = setting(3e-3, "peak learning rate of the one-cycle schedule",
                        ok=lambda v: 0 < v <= 10, expected="0 < lr <= 10")
    optimizer: str = setting("adam", "adam or sgd", ok=lambda v: v in ("adam", "sgd"),
                             expected="adam or sgd")
    seed: int = setting(0, "seed of the data order and the initial weights",
                        ok=lambda v: 0 <= v < 2**31, expected="0..2^31-1")
    threads: int = setting(0, "torch threads per rank (0 = cores // ranks)",
                           ok=lambda v: v >= 0, expected=">= 0 (0 = cores // ranks)")
    augment: str = setting("none", "random changes to the frames: none, flip or flip-crop",
                           ok=lambda v: v in AUGMENT, expected=f"one of {AUGMENT}")
    checkpoint_dir: Path = setting(doc="where a run keeps its resumable checkpoint",
                                   factory=lambda: state_dir() / "retrain" / "checkpoints",
                                   shown="<state>/retrain/checkpoints")
    registry: Path | None = setting(None, "registry root (empty = FRAMESTREAM_REGISTRY_ROOT)")
    margin: float = setting(0.0, "holdout accuracy gain over the serving version needed to "
                                 "promote", ok=lambda v: -1 <= v <= 1, expected="-1..1")
    max_train: int = setting(0, "train on the first N samples only (0 = all 60000)",
                             ok=lambda v: v >= 0, expected=">= 0 (0 = all 60000)")
    holdout_limit: int = setting(0, "evaluate on the first N test samples (0 = all 10000)",
                                 ok=lambda v: v >= 0, expected=">= 0 (0 = all 10000)")
    target: float = setting(0.92, "accuracy whose time-to-reach is reported",
                            ok=lambda v: 0 < v <= 1, expected="0..1")
    timeout_s: float = setting(120.0, "seconds a rank waits for the others to join or answer",
                               ok=lambda v: v > 0, expected="> 0 seconds")
    source: str = setting("fashion-mnist", "training data: fashion-mnist (IDX files) or zmq "
                                           "(frames pushed by spark-submit jobs/retrain_kafka.py)",
                          ok=lambda v: v in SOURCES, expected=f"one of {SOURCES}")
    feed_endpoints: Path = setting(doc="source zmq: where rank 0 publishes the training ranks' "
                                       "endpoints", factory=lambda: state_dir() /
                                   "train-endpoints.json", shown="<state>/train-endpoints.json")
    feed_timeout_s: float = setting(600.0, "source zmq: seconds without data before the ranks "
                                           "give up", ok=lambda v: v > 0, expected="> 0 seconds")
    feed_max_frames: int = setting(1_000_000, "source zmq: frames one rank holds at most",
                                   ok=lambda v: v >= 1, expected=">= 1")
    data_range: str = setting("", "source zmq: the fed range, recorded in the manifest")


@dataclass(frozen=True)
class RunOptions:
    """What this invocation does beyond the settings."""

    resume: bool = False            # continue from <checkpoint_dir>/last.pt when it exists
    promote: bool = True            # pass the new version through the promotion gate
    warm_start: bool = False        # start from the serving version's weights (its parent)
    stop_after: int = 0             # stop after this many epochs of this run, keep the checkpoint
    plot: Path | None = None
    progress: bool = True
