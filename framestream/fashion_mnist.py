"""Fashion-MNIST from Debian's ``dataset-fashion-mnist`` (IDX files, gzip), as numpy arrays.

Used by the producer (test images published as JPEG/PNG frames), by training (offline data path)
and by tests. Nothing is downloaded: the files come from ``make setup`` (apt).
"""

from __future__ import annotations

import gzip
import struct
from functools import lru_cache
from pathlib import Path

import numpy as np

from framestream.errors import ServiceError
from framestream.paths import FASHION_MNIST_DIR

CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
               "Sneaker", "Bag", "Ankle boot")

_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
          "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (optionally gzipped) into an array of its declared shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims}, file has {body.size} values")
    return body.reshape(dims)


@lru_cache(maxsize=2)
def load(split: str = "test", root: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, 28, 28], labels uint8 [N]) of the ``train`` or ``test`` split."""
    if split not in _FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(root or FASHION_MNIST_DIR)
    images_file, labels_file = (root / name for name in _FILES[split])
    if not images_file.exists():
        raise ServiceError(f"Fashion-MNIST not found at {images_file}: run `make setup` "
                           f"(apt-get install dataset-fashion-mnist) or set "
                           f"FRAMESTREAM_FASHION_MNIST_DIR")
    images, labels = read_idx(images_file), read_idx(labels_file)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{root}: {images.shape[0]} images but {labels.shape[0]} labels")
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels
