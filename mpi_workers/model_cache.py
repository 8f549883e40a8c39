"""The model versions a serving rank holds, loaded on demand, verified, on the rank's device.

Requests name the version they want (the stream pins one per micro-batch), so the switch to a
newly promoted version happens at a micro-batch boundary on every rank at once, and no forward pass
mixes versions. The rank also preloads the promoted version as soon as it sees it, so the switch
costs nothing. A version that fails its checksum is never loaded.

At start the rank serves what ``serving.json`` names, or, when that version does not load (bad
checksum, broken or escaping manifest, missing) or the file does not parse, the newest version that
does (:func:`models.fallback.choose_serving`, the same choice the stream driver makes), so a bad
promotion followed by a relaunch does not take the ranks down.

Each version loads as eager torch and then, unless ``runtime`` is ``eager``, gets the fast runtime
(:mod:`models.runtime`): the version's ONNX export (cached and checksummed beside its weights,
:mod:`models.onnx_export`) in ONNX Runtime, used only when it passes the parity gate against eager
torch on the gate's holdout frames. When it cannot be built or fails the gate, the version serves
eager torch and the reason is logged and handed to ``on_load`` (the rank's metrics).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from models.runtime import RUNTIMES, RuntimeChoice
from models.spec import RANDOM_PREFIX, PreprocessSpec

if TYPE_CHECKING:
    from torch import nn

    from models.fallback import ServingChoice
    from models.registry import Manifest
    from models.runtime import OrtRunner

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    version: str
    net: "nn.Module"
    spec: PreprocessSpec
    device: str = "cpu"
    #: the fast runtime that runs the model step (None: eager torch, ``net``)
    runner: "OrtRunner | None" = None
    runtime: RuntimeChoice | None = None


class ModelCache:
    """``runtime``: ``eager`` (the default for in-process users: tests, benches) or a fast runtime
    (``auto``/``onnxruntime``; ``python -m mpi_workers.serve`` passes ``--runtime``, default
    auto). ``on_load(model)`` is called for each version loaded, with ``model.runtime`` set."""

    def __init__(self, registry_root: str | None, device: str, keep: int = 3,
                 default: str | None = None, runtime: str = "eager",
                 on_load: Callable[[LoadedModel], None] | None = None) -> None:
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
        self.device = device
        self.keep = keep
        self.runtime = runtime
        self._on_load = on_load
        self._registry_root = registry_root
        self._registry = None
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()
        self._pinned_default = default
        self.default_version = default
        #: how the default was chosen at start (None when pinned with --version): a fallback past
        #: a promoted version that does not load is counted and shown by the rank's metrics
        self.start: "ServingChoice | None" = None
        if default:
            self.get(default)  # a version named explicitly must load: no silent substitute
            return
        from models.fallback import choose_serving

        # The load itself is the check (checksum on the very bytes loaded): a bad promotion
        # falls back to the newest version that loads instead of aborting the rank.
        self.start = choose_serving(self.registry, accept=self.get)
        self.default_version = self.start.version

    @property
    def registry(self):  # type: ignore[no-untyped-def]
        if self._registry is None:
            from models.registry import Registry

            self._registry = Registry(self._registry_root or None)
        return self._registry

    def _serving_version(self) -> str | None:
        return self.registry.serving()

    def _load(self, version: str) -> LoadedModel:
        if version.startswith(RANDOM_PREFIX):
            import torch

            from models.nets import DEFAULT_SPECS, build

            name = version[len(RANDOM_PREFIX):]
            torch.manual_seed(0)  # the same random weights on every rank
            net = build(name).eval().to(self.device)
            model = LoadedModel(version, net, DEFAULT_SPECS[name], self.device)
            return self._with_runtime(model, None)
        net, manifest = self.registry.load(version, device=self.device)
        model = LoadedModel(version, net, manifest.preprocess_spec(), self.device)
        return self._with_runtime(model, manifest)

    def _with_runtime(self, model: LoadedModel, manifest: "Manifest | None") -> LoadedModel:
        """``model`` with the fast runtime attached when it can be built and passes the gate."""
        from models import runtime as rt

        asked = self.runtime
        if asked == "eager":
            model.runtime = RuntimeChoice(asked, "eager")
            return model
        if not str(self.device).startswith("cpu"):  # ONNX Runtime's CUDA EP: not built (yet)
            model.runtime = RuntimeChoice(asked, "eager", "" if asked == "auto" else "device",
                                          f"no fast runtime for {self.device}")
            return self._fell_back(model)
        why = rt.available()
        if why:
            model.runtime = RuntimeChoice(asked, "eager", "unavailable", why)
            return self._fell_back(model)
        try:
            runner = rt.OrtRunner(self._export(model, manifest), self._threads())
        except Exception as exc:  # noqa: BLE001 -- the fast path is optional; eager still serves
            log.exception("ONNX export/session of %s failed", model.version)
            model.runtime = RuntimeChoice(asked, "eager", "export_failed",
                                          f"{type(exc).__name__}: {exc}")
            return self._fell_back(model)
        from mpi_workers.inference import forward

        frames = rt.gate_frames(model.spec)
        parity = rt.compare(forward(model, frames), forward(replace(model, runner=runner), frames))
        if not parity.ok:
            model.runtime = RuntimeChoice(asked, "eager", "parity", parity.describe(), parity)
            return self._fell_back(model)
        model.runner = runner
        model.runtime = RuntimeChoice(asked, runner.name, parity=parity)
        log.info("%s runs on %s (%d threads); parity gate passed: %s", model.version,
                 runner.name, runner.threads, parity.describe())
        return model

    def _fell_back(self, model: LoadedModel) -> LoadedModel:
        choice = model.runtime
        assert choice is not None
        if choice.fell_back:
            log.error("%s serves eager torch instead of %s (%s: %s)", model.version,
                      choice.requested, choice.fallback_reason, choice.detail)
        return model

    def _export(self, model: LoadedModel, manifest: "Manifest | None") -> bytes:
        from models.onnx_export import cached_export, export_onnx
        from mpi_workers.inference import forward_rows

        rows = forward_rows(self.device)
        if manifest is None:  # a random-init benchmark net: no registry to cache in
            return export_onnx(model.net, model.spec, rows)
        return cached_export(self.registry, model.version, manifest, model.net, rows)

    @staticmethod
    def _threads() -> int:
        import torch

        return torch.get_num_threads()  # the rank's thread count, set before the cache is built

    def get(self, version: str | None) -> LoadedModel:
        version = version or self.default_version
        if version in self._models:
            self._models.move_to_end(version)
            return self._models[version]
        model = self._load(version)
        log.info("loaded model %s on %s", version, self.device)
        if self._on_load is not None:
            self._on_load(model)
        self._models[version] = model
        while len(self._models) > self.keep:  # evict the least recently used, never the default
            victim = next(v for v in self._models if v != self.default_version)
            del self._models[victim]
        return model

    def refresh(self) -> str | None:
        """Follow the registry's serving pointer (unless a version was pinned at start); returns
        the new default version when it changed."""
        if self._pinned_default is not None:
            return None
        serving = self._serving_version()
        if serving is None or serving == self.default_version:
            return None
        self.get(serving)  # preload (verifies the checksum) before making it the default
        self.default_version = serving
        return serving
