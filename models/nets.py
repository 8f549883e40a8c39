"""The networks framestream serves and trains, by name.

A net takes normalised float32 NCHW (see :func:`models.spec.normalize`) and returns logits.
Nothing is downloaded: nets are built from code and trained here, or random-initialised (ResNet-18
for speed benchmarks).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from framestream.fashion_mnist import CLASS_NAMES
from models.spec import PreprocessSpec


class FashionCNN(nn.Module):
    """Two conv blocks and two dense layers: the classic ~0.92-0.93 Fashion-MNIST CNN."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 32,
                 dropout: float = 0.25) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width),
            nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(2 * width * 7 * 7, 128),
            nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _resnet18(num_classes: int = 1000, in_channels: int = 3) -> nn.Module:
    from torchvision.models import resnet18

    net = resnet18(weights=None, num_classes=num_classes)
    if in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
    return net


NETS: dict[str, Callable[..., nn.Module]] = {"fashion_cnn": FashionCNN, "resnet18": _resnet18}

#: The preprocessing each net is meant for, unless a registry manifest says otherwise.
DEFAULT_SPECS: dict[str, PreprocessSpec] = {
    "fashion_cnn": PreprocessSpec(28, 28, 1, (0.2860,), (0.3530,), "bilinear", CLASS_NAMES),
    "resnet18": PreprocessSpec(224, 224, 3, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
                               "bilinear", tuple(f"class_{i}" for i in range(1000))),
}


def build(name: str, **kwargs: Any) -> nn.Module:
    """A fresh (randomly initialised) net by name."""
    try:
        factory = NETS[name]
    except KeyError:
        raise ValueError(f"unknown net {name!r}; known: {sorted(NETS)}") from None
    return factory(**kwargs)
