"""The model versions a serving rank holds, loaded on demand, verified, on the rank's device.

Requests name the version they want (the stream pins one per micro-batch), so the switch to a
newly promoted version happens at a micro-batch boundary on every rank at once, and no forward pass
mixes versions. The rank also preloads the promoted version as soon as it sees it, so the switch
costs nothing. A version that fails its checksum is never loaded.

At start the rank serves what ``serving.json`` names, or, when that version does not load (bad
checksum, broken or escaping manifest, missing) or the file does not parse, the newest version that
does (:func:`models.fallback.choose_serving`, the same choice the stream driver makes), so a bad
promotion followed by a relaunch does not take the ranks down.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from models.spec import RANDOM_PREFIX, PreprocessSpec

if TYPE_CHECKING:
    from torch import nn

    from models.fallback import ServingChoice

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    version: str
    net: "nn.Module"
    spec: PreprocessSpec
    device: str = "cpu"


class ModelCache:
    def __init__(self, registry_root: str | None, device: str, keep: int = 3,
                 default: str | None = None) -> None:
        self.device = device
        self.keep = keep
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
            return LoadedModel(version, net, DEFAULT_SPECS[name], self.device)
        net, manifest = self.registry.load(version, device=self.device)
        return LoadedModel(version, net, manifest.preprocess_spec(), self.device)

    def get(self, version: str | None) -> LoadedModel:
        version = version or self.default_version
        if version in self._models:
            self._models.move_to_end(version)
            return self._models[version]
        model = self._load(version)
        log.info("loaded model %s on %s", version, self.device)
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
