"""The fixed frame sets every pipeline and ceiling sees, and the one model per set.

``fashion``: Fashion-MNIST test images as JPEG (quality 90, ~700 B), served by the 2-conv
``fashion_cnn``. ``imagenet``: ImageNet-sized frames, 256x256 RGB JPEGs of ~26 KB (each a
Fashion-MNIST image upscaled, tinted, on a gradient, with sensor-like noise; seeded), resized to
224x224 by the same ETL code and served by a torchvision ResNet-18. The fair bench
(:mod:`bench.stream`) loads a trained registry version in every pipeline with :func:`model`; the
speed-only ceilings use the nets' seed-0 random weights (nothing downloaded).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from framestream.frames import Frame, encode_image

NETS = {"fashion": "fashion_cnn", "imagenet": "resnet18"}


@dataclass(frozen=True)
class FrameSet:
    name: str
    net: str
    values: tuple[bytes, ...]
    labels: tuple[int, ...]

    @property
    def version(self) -> str:
        """The model version name ranks serve without a registry (``random-<net>``)."""
        return f"random-{self.net}"

    @property
    def mean_bytes(self) -> float:
        return float(np.mean([len(v) for v in self.values]))

    def frames(self, count: int, keys: list[str], start: int = 0,
               run: str | None = None) -> Iterator[Frame]:
        """``count`` frames cycling over the set from ``start``, keyed round-robin over ``keys``
        (:func:`bench.fair.partition_keys`: one key per partition, so every partition gets an
        equal share); frame ``i`` has id ``<run>-<start + i>`` (its set index modulo the set
        size); capture time stamped as each one is sent."""
        run = run or uuid.uuid4().hex[:8]
        n = len(self.values)
        for i in range(count):
            j = (start + i) % n
            yield Frame(key=keys[i % len(keys)], value=self.values[j],
                        frame_id=f"{run}-{start + i}", capture_ts=time.time(), fmt="jpeg",
                        label=self.labels[j], sample=f"bench:{self.name}:{j}")


@lru_cache(maxsize=4)
def frame_set(name: str, size: int | None = None) -> FrameSet:
    """The named set (``size`` distinct frames; default 10,000 fashion / 500 imagenet)."""
    from framestream import fashion_mnist

    images, labels = fashion_mnist.load("test")
    if name == "fashion":
        n = size or len(images)
        values = tuple(encode_image(images[i], "jpeg", 90) for i in range(n))
    elif name == "imagenet":
        n = size or 500
        rng = np.random.default_rng(0)
        values = tuple(_imagenet_like(images[i], rng) for i in range(n))
    else:
        raise ValueError(f"unknown frame set {name!r}: one of {sorted(NETS)}")
    return FrameSet(name, NETS[name], values, tuple(int(v) for v in labels[:n]))


def _imagenet_like(gray: np.ndarray, rng: np.random.Generator, side: int = 256) -> bytes:
    from PIL import Image

    up = np.asarray(Image.fromarray(gray).resize((side, side), Image.Resampling.BICUBIC),
                    np.float32)
    tint = rng.uniform(0.3, 1.0, 3)
    gradient = np.linspace(0, 60, side)[None, :, None] * rng.uniform(0, 1, 3)
    rgb = up[..., None] * tint + gradient + rng.normal(0, 14, (side, side, 3))
    return encode_image(np.clip(rgb, 0, 255).astype(np.uint8), "jpeg", 90)


def spec(name: str):  # noqa: ANN201 - PreprocessSpec, imported lazily
    from models.nets import DEFAULT_SPECS

    return DEFAULT_SPECS[NETS[name]]


def model(name: str, threads: int | None = None, device: str = "cpu",  # noqa: ANN201
          version: str | None = None, registry: str | None = None, runtime: str = "eager"):
    """The set's net as the ranks' ``LoadedModel``, in eval mode: registry ``version`` (loaded
    and checksummed exactly as the ranks load it) when given, else the seed-0 random weights of
    the ranks' ``random-<net>`` version (speed-only ceilings). ``runtime`` is the ranks' model
    step setting (eager, onnxruntime, auto), with the ranks' parity gate at load."""
    import torch

    from models.nets import build
    from mpi_workers.model_cache import LoadedModel

    if threads:
        torch.set_num_threads(threads)
    if runtime != "eager" or (version and not version.startswith("random-")):
        from mpi_workers.model_cache import ModelCache

        version = version or f"random-{NETS[name]}"
        loaded = ModelCache(registry, device, default=version, runtime=runtime).get(version)
        if runtime == "onnxruntime" and loaded.runner is None:  # a comparison must run what it says
            choice = loaded.runtime
            raise RuntimeError(f"{version} did not get ONNX Runtime: "
                               f"{choice.fallback_reason if choice else '?'} "
                               f"({choice.detail if choice else ''})")
        return loaded
    torch.manual_seed(0)  # exactly what ModelCache does for random-<net>
    net = build(NETS[name]).eval().to(device)
    return LoadedModel(f"random-{NETS[name]}", net, spec(name), device)


def preprocessed(name: str, count: int) -> np.ndarray:
    """uint8 NHWC tensors of the first ``count`` frames, decoded by the stream's own ETL code."""
    from etl.decode import decode_batch

    fs = frame_set(name)
    values = [fs.values[i % len(fs.values)] for i in range(count)]
    decoded = decode_batch(values, spec(name))
    if len(decoded.bad_index):
        raise RuntimeError(f"{len(decoded.bad_index)} frames of {name} did not decode: "
                           f"{decoded.reasons[:3]}")
    return decoded.images
