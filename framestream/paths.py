"""Where things live on disk: the repo, the install cache (venv, jars) and the state folder."""

from __future__ import annotations

import os
from pathlib import Path

from framestream.errors import ServiceError

# The checkout when framestream is installed editable (make setup), else site-packages.
REPO = Path(__file__).resolve().parent.parent

FASHION_MNIST_DIR = Path(os.environ.get("FRAMESTREAM_FASHION_MNIST_DIR",
                                        "/usr/share/datasets/fashion-mnist"))


def cache_dir() -> Path:
    """Install cache shared by every checkout (venv, jars): ``FRAMESTREAM_CACHE``."""
    return Path(os.environ.get("FRAMESTREAM_CACHE", Path.home() / ".cache" / "framestream"))


def state_dir() -> Path:
    """Runtime state of the embedded stack (broker data and logs, checkpoints): ``FRAMESTREAM_STATE``;
    by default ``.state`` in the checkout, or in the cache when installed from a wheel."""
    default = REPO / ".state" if (REPO / "pyproject.toml").is_file() else cache_dir() / "state"
    return Path(os.environ.get("FRAMESTREAM_STATE", default))


def jar_dir(name: str) -> Path:
    """The folder of jars that ``scripts/setup.sh`` fetched with ``java/<name>/pom.xml``."""
    path = cache_dir() / "jars" / name
    if not path.is_dir() or not any(path.glob("*.jar")):
        raise ServiceError(f"no jars in {path}: run `make setup` (it fetches java/{name}/pom.xml "
                           f"from Maven Central)")
    return path


def jars(name: str) -> list[Path]:
    return sorted(jar_dir(name).glob("*.jar"))
