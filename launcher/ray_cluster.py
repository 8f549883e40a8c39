"""Connect to Ray: a local instance (``address="local"``, explicit CPUs) or an existing cluster."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from framestream.settings import check, settings_section

log = logging.getLogger(__name__)


@settings_section("ray")
@dataclass(frozen=True)
class RaySettings:
    address: str = field(default="local", metadata=check(
        lambda v: v in ("local", "auto") or v.startswith(("ray://", "127.", "localhost")) or ":" in v,
        "local, auto, ray://host:port or host:port"))
    num_cpus: int = field(default=2, metadata=check(lambda v: v >= 1, ">= 1"))
    num_gpus: int = field(default=0, metadata=check(lambda v: v >= 0, ">= 0"))
    dashboard: bool = False


def connect(settings: RaySettings | None = None, **init_kwargs: Any) -> dict[str, Any]:
    """``ray.init`` per the settings (a no-op if already connected); returns the context info."""
    import ray

    s = settings or RaySettings.load()
    if ray.is_initialized():
        return {"address": ray.get_runtime_context().gcs_address}
    if s.address == "local":
        ctx = ray.init(num_cpus=s.num_cpus, num_gpus=s.num_gpus, include_dashboard=s.dashboard,
                       log_to_driver=False, **init_kwargs)
    else:
        ctx = ray.init(address=s.address, log_to_driver=False, **init_kwargs)
    log.info("connected to Ray at %s", ctx.address_info.get("gcs_address"))
    return dict(ctx.address_info)
