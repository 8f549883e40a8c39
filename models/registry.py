"""The model registry: versioned weights with manifests on a plain path (local dir or shared FS).

Layout under the root (``FRAMESTREAM_REGISTRY_ROOT``, default ``<state>/registry``)::

    v0001/manifest.json        Manifest: net, preprocessing spec, metrics, sha256, data, lineage
    v0001/model.safetensors    weights only (no pickle, no optimizer state)
    serving.json               the promoted version + the history of served versions
    decisions.jsonl            every promote/rollback decision with its reason
    .lock                      flock taken by publish/promote/rollback (writers only)

A version directory is written under a temporary name and renamed into place, so readers never
see half a version. ``serving.json`` is replaced atomically (tmp + ``os.replace``) because serving
ranks poll it between batches; :meth:`Registry.serving` only re-reads it when it changed.

CLI: ``python -m models.registry [--root R] list | show V | promote V [--margin M] [--force] |
rollback``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from framestream.atomic import write_atomic
from framestream.paths import state_dir
from framestream.settings import Section, section, setting
from models.errors import (BadServingFile, BadVersion, ChecksumMismatch, NothingToRollBack,
                           RegistryError, VersionNotFound)
from models.spec import PreprocessSpec

if TYPE_CHECKING:
    from torch import nn

log = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
MANIFEST_FILE = "manifest.json"
SERVING_FILE = "serving.json"
DECISIONS_FILE = "decisions.jsonl"
_VERSION_RE = re.compile(r"^v(\d{4,})$")


class RegistrySettings(Section):
    """Where the registry lives and the default promotion margin."""

    model_config = section("registry")

    root: Path = setting(doc="the model registry's folder (a path every rank and the driver see)",
                         factory=lambda: state_dir() / "registry", shown="<state>/registry")
    margin: float = setting(0.0, "holdout accuracy a new version must beat the serving one by",
                            ok=lambda v: -1.0 <= v <= 1.0, expected="-1.0..1.0")


@dataclass(frozen=True)
class Manifest:
    """What a version is: enough to rebuild the net, preprocess its input and judge it."""

    version: str
    parent: str | None
    created: str                    # ISO 8601, UTC
    net: str
    net_kwargs: dict[str, Any]
    spec: dict[str, Any]            # PreprocessSpec.to_dict()
    metrics: dict[str, Any]         # at least holdout_accuracy and holdout (the set's name)
    sha256: str                     # of weights_file
    backend: str
    world_size: int
    data: dict[str, Any]
    weights_file: str = WEIGHTS_FILE

    def preprocess_spec(self) -> PreprocessSpec:
        return PreprocessSpec.from_dict(self.spec)

    @property
    def holdout_accuracy(self) -> float:
        return float(self.metrics["holdout_accuracy"])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Manifest":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass(frozen=True)
class Decision:
    """The outcome of :meth:`Registry.promote`."""

    promoted: bool
    reason: str


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _parse_serving(path: Path) -> dict[str, Any]:
    """``serving.json`` checked for shape: {"version": str | None, "history": [{"version": str}]}."""
    try:
        state = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadServingFile(path, f"not JSON: {exc}") from None
    if not isinstance(state, dict) or not isinstance(state.get("version"), (str, type(None))):
        raise BadServingFile(path, "expected an object whose \"version\" is a string or null")
    history = state.setdefault("history", [])
    if not isinstance(history, list) or not all(
            isinstance(e, dict) and isinstance(e.get("version"), str) for e in history):
        raise BadServingFile(path, "\"history\" must be a list of {\"version\": ...} entries")
    return state


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Registry:
    """Versions of trained models under one root path. Safe for concurrent readers and writers."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root is not None else RegistrySettings.load().root
        self._serving_cache: tuple[tuple[int, int, int], dict[str, Any]] | None = None

    def __repr__(self) -> str:
        return f"Registry({str(self.root)!r})"

    # ---- reading --------------------------------------------------------------------------------
    def _version_names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        found = [p.name for p in self.root.iterdir()
                 if _VERSION_RE.match(p.name) and (p / MANIFEST_FILE).is_file()]
        return sorted(found, key=lambda v: int(v[1:]))

    def version_names(self) -> list[str]:
        """Names of the published versions, oldest first (manifests not parsed)."""
        return self._version_names()

    def versions(self) -> list[Manifest]:
        """Every published version, oldest first."""
        return [self.manifest(v) for v in self._version_names()]

    def manifest(self, version: str) -> Manifest:
        """The manifest of ``version``; raises :class:`VersionNotFound`."""
        path = self.root / version / MANIFEST_FILE
        if not _VERSION_RE.match(version) or not path.is_file():
            raise VersionNotFound(version, self.root, self._version_names())
        try:
            return Manifest.from_dict(json.loads(path.read_text()))
        except (ValueError, TypeError, AttributeError) as exc:  # not JSON, not an object, fields
            raise BadVersion(version, self.root, f"{MANIFEST_FILE} is not a valid manifest "
                                                 f"({type(exc).__name__}: {exc})") from None

    def weights_path(self, version: str, manifest: Manifest | None = None) -> Path:
        """The weights file of ``version``, confined to its folder: a manifest whose
        ``weights_file`` is absolute, climbs out with ``..`` or a symlink, or is not a regular
        file raises :class:`BadVersion` (no file outside the version is ever read)."""
        m = manifest or self.manifest(version)
        name, folder = m.weights_file, self.root / version
        parts = Path(name).parts if isinstance(name, str) else ()
        if not parts or Path(name).is_absolute() or ".." in parts or "\\" in name:
            raise BadVersion(version, self.root, f"weights_file {name!r} must be a file name "
                                                 f"inside {folder}")
        path = folder / name
        resolved, home = path.resolve(), folder.resolve()
        if not resolved.is_relative_to(home):
            raise BadVersion(version, self.root, f"weights_file {name!r} leads outside {folder} "
                                                 f"(to {resolved})")
        if path.exists() and not resolved.is_file():
            raise BadVersion(version, self.root, f"weights_file {name!r} is not a regular file")
        return path

    def _serving_state(self) -> dict[str, Any]:
        path = self.root / SERVING_FILE
        try:
            st = path.stat()
        except FileNotFoundError:
            return {"version": None, "history": []}
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        if self._serving_cache is None or self._serving_cache[0] != key:
            self._serving_cache = (key, _parse_serving(path))
        return self._serving_cache[1]

    def serving(self) -> str | None:
        """The promoted version, or None. One ``stat`` when ``serving.json`` has not changed.

        Raises :class:`BadServingFile` when the file does not parse or has the wrong shape."""
        return self._serving_state()["version"]

    def serving_history(self) -> list[str]:
        """The versions served so far, oldest first, from ``serving.json``; when that file is
        unreadable, rebuilt from the promote/rollback events in ``decisions.jsonl``."""
        try:
            return [e["version"] for e in self._serving_state()["history"]]
        except BadServingFile:
            pass
        served: list[str] = []
        try:
            lines = (self.root / DECISIONS_FILE).read_text().splitlines()
        except OSError:
            return served
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if not isinstance(event, dict):
                continue
            if event.get("event") == "promote" and event.get("promoted"):
                served.append(str(event.get("version")))
            elif event.get("event") == "rollback" and event.get("to"):
                served.append(str(event["to"]))
        return served

    def verify(self, version: str) -> Manifest:
        """Check the weights file against the manifest's sha256; raise :class:`ChecksumMismatch`."""
        m = self.manifest(version)
        path = self.weights_path(version, m)
        actual = sha256_file(path)
        if actual != m.sha256:
            raise ChecksumMismatch(path, m.sha256, actual)
        return m

    def load(self, version: str | None = None, device: str = "cpu") -> "tuple[nn.Module, Manifest]":
        """(net in eval mode on ``device``, manifest) of ``version`` (None = the serving one).

        Raises :class:`VersionNotFound`, :class:`RegistryError` (nothing serving) or
        :class:`ChecksumMismatch` (checked on the very bytes that are then loaded).
        """
        from safetensors.torch import load as load_safetensors

        from models.nets import build

        if version is None:
            version = self.serving()
            if version is None:
                raise RegistryError(f"registry {self.root} has no serving version: publish one "
                                    f"(jobs/retrain.py) or `python -m models.registry promote V`")
        m = self.manifest(version)
        path = self.weights_path(version, m)
        data = path.read_bytes()
        actual = hashlib.sha256(data).hexdigest()
        if actual != m.sha256:
            raise ChecksumMismatch(path, m.sha256, actual)
        net = build(m.net, **m.net_kwargs)
        net.load_state_dict(load_safetensors(data), strict=True)
        return net.to(device).eval(), m

    # ---- writing --------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def publish(self, model: "nn.Module", *, net: str, net_kwargs: dict[str, Any],
                spec: PreprocessSpec, metrics: dict[str, Any], parent: str | None, backend: str,
                world_size: int, data: dict[str, Any]) -> Manifest:
        """Store ``model``'s weights as the next version (v0001, v0002, ...) and return its manifest.

        Not promoted: call :meth:`promote`. Raises ValueError when ``metrics`` lacks
        ``holdout_accuracy`` or ``holdout``, or when ``parent`` is not a version here.
        """
        from safetensors.torch import save_file

        missing = [k for k in ("holdout_accuracy", "holdout") if k not in metrics]
        if missing:
            raise ValueError(f"metrics must include {missing} (the promotion gate compares them)")
        if parent is not None:
            self.manifest(parent)
        tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        with self._locked():
            names = self._version_names()
            version = f"v{(int(names[-1][1:]) + 1) if names else 1:04d}"
            tmp = self.root / f".tmp-{version}-{uuid.uuid4().hex[:8]}"
            tmp.mkdir()
            try:
                weights = tmp / WEIGHTS_FILE
                # One metadata key: safetensors writes the map in hash order, so two keys would
                # give identical weights different bytes (and different checksums) run to run.
                save_file(tensors, str(weights), metadata={"format": "pt"})
                manifest = Manifest(
                    version=version, parent=parent, created=_now(), net=net,
                    net_kwargs=dict(net_kwargs), spec=spec.to_dict(), metrics=dict(metrics),
                    sha256=sha256_file(weights), backend=backend, world_size=int(world_size),
                    data=dict(data), weights_file=WEIGHTS_FILE)
                text = json.dumps(manifest.to_dict(), indent=2) + "\n"
                manifest = Manifest.from_dict(json.loads(text))  # exactly what readers will see
                write_atomic(tmp / MANIFEST_FILE, text)
                os.rename(tmp, self.root / version)
            except BaseException:
                for p in tmp.glob("*"):
                    p.unlink()
                tmp.rmdir()
                raise
        log.info("published %s (%s, holdout accuracy %.4f on %s)", version, net,
                 metrics["holdout_accuracy"], metrics["holdout"])
        return manifest

    def _write_serving(self, state: dict[str, Any]) -> None:
        write_atomic(self.root / SERVING_FILE, json.dumps(state, indent=2) + "\n")

    def _record(self, event: dict[str, Any]) -> None:
        with open(self.root / DECISIONS_FILE, "a") as f:
            f.write(json.dumps({"at": _now(), **event}) + "\n")

    def promote(self, version: str, margin: float = 0.0, force: bool = False) -> Decision:
        """Serve ``version`` if its holdout accuracy >= the serving version's + ``margin``.

        The first version is always promoted; ``force`` skips the accuracy gate but never the
        checksum: a version whose weights fail it raises :class:`ChecksumMismatch`. A refused
        version stays published and unserved; the reason is logged and returned.
        """
        candidate = self.verify(version)
        with self._locked():
            state = dict(self._serving_state())
            current = state["version"]
            if current == version:
                decision = Decision(False, f"{version} is already serving")
            elif current is None:
                decision = Decision(True, f"first serving version ({version}, holdout accuracy "
                                          f"{candidate.holdout_accuracy:.4f})")
            else:
                decision = self._gate(candidate, self.manifest(current), margin, force)
            if decision.promoted:
                entry = {"version": version, "at": _now(), "reason": decision.reason}
                self._write_serving({"version": version, "updated": entry["at"],
                                     "history": [*state["history"], entry]})
            self._record({"event": "promote", "version": version, "serving_before": current,
                          "promoted": decision.promoted, "reason": decision.reason,
                          "margin": margin, "force": force})
        (log.info if decision.promoted else log.warning)(
            "%s %s: %s", "promoted" if decision.promoted else "kept unserved", version,
            decision.reason)
        return decision

    @staticmethod
    def _gate(candidate: Manifest, serving: Manifest, margin: float, force: bool) -> Decision:
        new, old = candidate.holdout_accuracy, serving.holdout_accuracy
        same_set = candidate.metrics["holdout"] == serving.metrics["holdout"]
        if force:
            return Decision(True, f"forced: {candidate.version} {new:.4f} replaces "
                                  f"{serving.version} {old:.4f}")
        if not same_set:
            return Decision(False, f"holdout sets differ ({candidate.metrics['holdout']!r} vs "
                                   f"{serving.metrics['holdout']!r}): accuracies are not "
                                   f"comparable; use force to promote anyway")
        if new >= old + margin:
            return Decision(True, f"holdout accuracy {new:.4f} >= {serving.version}'s {old:.4f} "
                                  f"+ margin {margin:g}")
        return Decision(False, f"holdout accuracy {new:.4f} < {serving.version}'s {old:.4f} + "
                               f"margin {margin:g}")

    def rollback(self) -> str:
        """Serve the previously served version again; returns it. Raises :class:`NothingToRollBack`."""
        with self._locked():
            state = self._serving_state()
            history = list(state["history"])
            if len(history) < 2:
                raise NothingToRollBack(f"registry {self.root}: no earlier served version to roll "
                                        f"back to (serving: {state['version']})")
            dropped = history.pop()
            back = history[-1]["version"]
            self.verify(back)
            self._write_serving({"version": back, "updated": _now(), "history": history})
            self._record({"event": "rollback", "from": dropped["version"], "to": back})
        log.warning("rolled back from %s to %s", dropped["version"], back)
        return back


if __name__ == "__main__":
    # `python -m models.registry` runs the CLI, which lives in models.registry_cli and imports this
    # module (as models.registry, not as __main__); running it the way `-m` does keeps the one
    # direction of import: the CLI depends on the registry, never the other way.
    import runpy

    runpy.run_module("models.registry_cli", run_name="__main__", alter_sys=True)
