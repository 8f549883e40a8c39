"""The preprocessing spec stored with every model version, used by ETL, serving and training.

ETL resizes each decoded frame to ``height x width`` with ``channels`` channels and sends it as
uint8 NHWC (the smallest faithful tensor); the rank normalises on its device with
:func:`normalize`. Training goes through the same two steps, so serving and training never drift.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from framestream.errors import ConfigError

if TYPE_CHECKING:
    import torch

#: Version names served without a registry: random-initialised nets for speed benchmarks.
RANDOM_PREFIX = "random-"
RESAMPLE = ("bilinear", "nearest", "bicubic", "lanczos", "box")


@dataclass(frozen=True)
class PreprocessSpec:
    height: int = 28
    width: int = 28
    channels: int = 1                       # 1 = grayscale (Pillow "L"), 3 = RGB
    mean: tuple[float, ...] = (0.2860,)     # per channel, on [0, 1] pixels
    std: tuple[float, ...] = (0.3530,)
    resample: str = "bilinear"
    class_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ConfigError("spec.channels", self.channels, "1 (grayscale) or 3 (RGB)")
        if not (1 <= self.height <= 4096 and 1 <= self.width <= 4096):
            raise ConfigError("spec.height/width", (self.height, self.width), "1..4096 each")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ConfigError("spec.mean/std", (self.mean, self.std), f"{self.channels} values each")
        if any(s <= 0 for s in self.std):
            raise ConfigError("spec.std", self.std, "positive values")
        if self.resample not in RESAMPLE:
            raise ConfigError("spec.resample", self.resample, f"one of {RESAMPLE}")

    @property
    def mode(self) -> str:
        """The Pillow mode frames are converted to before resizing."""
        return "L" if self.channels == 1 else "RGB"

    @property
    def shape(self) -> tuple[int, int, int]:
        """The HWC shape of one preprocessed frame."""
        return (self.height, self.width, self.channels)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PreprocessSpec":
        d = dict(d)
        for key in ("mean", "std", "class_names"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)


def normalize(batch: "torch.Tensor", spec: PreprocessSpec) -> "torch.Tensor":
    """uint8 NHWC (on any device) -> float32 NCHW normalised by the spec's mean and std."""
    import torch

    if batch.dtype != torch.uint8 or batch.dim() != 4 or tuple(batch.shape[1:]) != spec.shape:
        raise ValueError(f"expected uint8 [N, {spec.height}, {spec.width}, {spec.channels}], got "
                         f"{batch.dtype} {list(batch.shape)}")
    x = batch.permute(0, 3, 1, 2).to(torch.float32).div_(255.0)
    mean = torch.tensor(spec.mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    return x.sub_(mean).div_(std).contiguous()
