"""Registry versions for tests: a random-init ``fashion_cnn`` published as a real version."""

from __future__ import annotations

import torch

from models.nets import DEFAULT_SPECS, build
from models.registry import Registry


def publish_random(registry: Registry, seed: int, parent: str | None = None,
                   accuracy: float = 0.5) -> str:
    """Publish a random-init ``fashion_cnn`` (seeded) as the next version; returns its name."""
    torch.manual_seed(seed)
    return registry.publish(build("fashion_cnn"), net="fashion_cnn", net_kwargs={},
                            spec=DEFAULT_SPECS["fashion_cnn"],
                            metrics={"holdout_accuracy": accuracy, "holdout": "test-fixture"},
                            parent=parent, backend="none", world_size=1,
                            data={"source": "random init"}).version


def corrupt_weights(registry: Registry, version: str) -> None:
    """Flip one bit of ``version``'s weights after its checksum was taken (a bad promotion)."""
    weights = registry.root / version / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
