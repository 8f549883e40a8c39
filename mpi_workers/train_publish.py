"""What rank 0 of a retraining job does with the registry: warm start from it, publish to it.

Split from :mod:`mpi_workers.train` (the rank loop), which calls these on rank 0 only; both take
the run's settings from :mod:`mpi_workers.train_settings`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from framestream.errors import ConfigError

if TYPE_CHECKING:
    from models.registry import Registry
    from mpi_workers.train_settings import RunOptions, TrainSettings

log = logging.getLogger(__name__)


def registry_of(s: "TrainSettings") -> "Registry":
    from models.registry import Registry

    return Registry(s.registry)


def warm_start(model: Any, s: "TrainSettings") -> str | None:
    """Load the serving version's weights into ``model``; returns its version (the parent)."""
    reg = registry_of(s)
    if reg.serving() is None:
        log.warning("--warm-start: registry %s serves nothing; starting from random weights", reg.root)
        return None
    served, m = reg.load(device="cpu")
    if m.net != s.net:
        raise ConfigError("--warm-start", m.version, f"a serving version of net {s.net} (it is {m.net})")
    model.load_state_dict(served.state_dict())
    return m.version


def publish(model: Any, s: "TrainSettings", opts: "RunOptions", history: list[dict[str, Any]],
             parent: str | None, backend: str, size: int, n: int, holdout: str) -> dict[str, Any]:
    """Publish ``model`` as a new version and, unless --no-promote, pass it through the gate."""
    from models.nets import DEFAULT_SPECS

    reg = registry_of(s)
    last = history[-1]
    reached = [h["elapsed_s"] for h in history if h["holdout_accuracy"] >= s.target]
    metrics = {"holdout_accuracy": last["holdout_accuracy"], "holdout": holdout,
               "holdout_loss": last["holdout_loss"], "train_loss": last["train_loss"],
               "train_s": last["elapsed_s"], "target": s.target,
               "time_to_target_s": reached[0] if reached else None, "history": history}
    source = {"source": "fashion-mnist", "split": "train", "rows": [0, n]} \
        if s.source == "fashion-mnist" else {"source": "kafka via spark (zmq feed)",
                                             "range": s.data_range, "rows": n}
    data = {**source, "augment": s.augment,
            "epochs": s.epochs, "batch_size_per_rank": s.batch_size, "optimizer": s.optimizer,
            "lr": s.lr, "seed": s.seed}
    m = reg.publish(model, net=s.net, net_kwargs={}, spec=DEFAULT_SPECS[s.net], metrics=metrics,
                    parent=parent, backend=backend, world_size=size, data=data)
    out = {"version": m.version, "registry": str(reg.root)}
    if opts.promote:
        d = reg.promote(m.version, margin=s.margin)
        out.update(promoted=d.promoted, reason=d.reason)
    else:
        out.update(reason="not promoted (--no-promote)")
    out["serving"] = reg.serving()
    return out
