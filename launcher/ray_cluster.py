"""Connect to Ray: a local instance (``address="local"``, explicit CPUs) or an existing cluster.

- ``local``: start a private instance inside this process (``FRAMESTREAM_RAY_NUM_CPUS`` /
  ``NUM_GPUS``); it ends with the process. Gangs of different processes do not share it.
- ``auto``: the cluster that ``ray start`` started on this machine (or ``RAY_ADDRESS``).
- ``host:port`` (the head's GCS) or ``ray://host:10001`` (Ray Client): any cluster.

Ray 2.60 turns token authentication on for clusters it starts when a token exists (``ray start
--head`` writes/reads ``~/.ray/auth_token``); processes that join such a cluster must say so. When
``RAY_AUTH_MODE`` is unset and a token is at hand (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or
``~/.ray/auth_token``), :func:`connect` sets ``RAY_AUTH_MODE=token`` for this process before
joining, as ``ray start --address`` needs it set on every node that joins.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from framestream.errors import ServiceError
from framestream.settings import Section, section, setting

log = logging.getLogger(__name__)


class RaySettings(Section):
    """Which Ray cluster the launcher uses."""

    model_config = section("ray")

    address: str = setting(
        "local", "Ray cluster: local (a private instance), auto, host:port or ray://host:port",
        ok=lambda v: v in ("local", "auto") or v.startswith(("ray://", "127.", "localhost"))
        or ":" in v, expected="local, auto, ray://host:port or host:port")
    num_cpus: int = setting(2, "CPUs of a private local Ray instance",
                            ok=lambda v: v >= 1, expected=">= 1")
    num_gpus: int = setting(-1, "GPUs of a private local Ray instance (-1 = what Ray detects)",
                            ok=lambda v: v >= -1, expected="-1 (the GPUs Ray detects) or >= 0")
    dashboard: bool = setting(False, "start the Ray dashboard with a private instance")


def connect(settings: RaySettings | None = None, **init_kwargs: Any) -> dict[str, Any]:
    """``ray.init`` per the settings (a no-op if already connected); returns the context info."""
    import ray

    s = settings or RaySettings.load()
    if ray.is_initialized():
        gcs = ray.get_runtime_context().gcs_address
        return {"address": gcs, "gcs_address": gcs, "dashboard_url": ""}
    if s.address == "local":  # "local", not None: never join a `ray start` cluster by accident
        ctx = _start_local(s, init_kwargs)
    else:
        enable_token_auth_if_available()
        try:
            ctx = ray.init(address=s.address, log_to_driver=False, **init_kwargs)
        except ConnectionError as exc:
            raise ServiceError(
                f"cannot join the Ray cluster at {s.address} ({exc}); start it (`ray start "
                f"--head`), fix --address / FRAMESTREAM_RAY_ADDRESS, or set RAY_AUTH_MODE / "
                f"RAY_AUTH_TOKEN to match the cluster's authentication") from exc
    info = dict(getattr(ctx, "address_info", {}) or {})
    info["dashboard_url"] = getattr(ctx, "dashboard_url", "") or ""
    info.setdefault("gcs_address", s.address)
    log.info("connected to Ray at %s", info.get("gcs_address"))
    return info


def _start_local(s: RaySettings, init_kwargs: dict[str, Any], attempts: int = 2) -> Any:
    """Start a private Ray instance, once more if its node timed out during start-up.

    Ray's raylet gives its agents a fixed 15 s to write their port files and exits when they are
    late (ray-project/ray#65983): on a cold, loaded machine (a JVM and a broker starting beside
    it on 2 cores) the first start can miss that; the second finds the files in the page cache.
    """
    import ray

    attempt = 1
    while True:
        try:
            return ray.init(address="local", num_cpus=s.num_cpus,
                            num_gpus=None if s.num_gpus < 0 else s.num_gpus,
                            include_dashboard=s.dashboard, log_to_driver=False, **init_kwargs)
        except Exception as exc:  # ray.init raises bare Exceptions (e.g. dashboard packages)
            ray.shutdown()
            if attempt < attempts and "timed out during startup" in str(exc):
                log.warning("local Ray did not start (%s); starting it again", exc)
                attempt += 1
                continue
            raise ServiceError(f"could not start a local Ray instance: {exc} (check "
                               f"FRAMESTREAM_RAY_NUM_CPUS / NUM_GPUS / DASHBOARD)") from exc


def token_available(environ: dict[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    if env.get("RAY_AUTH_TOKEN"):
        return True
    path = env.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")
    return Path(path).is_file()


def enable_token_auth_if_available() -> bool:
    """Set ``RAY_AUTH_MODE=token`` when it is unset and a token exists; True if token auth is on.

    Ray reads its configuration once per process, so the mode is set through Ray's own helper
    (what ``ray start --head`` calls), which also refreshes that configuration.
    """
    mode = os.environ.get("RAY_AUTH_MODE")
    if mode is not None:
        return mode.lower() == "token"
    if not token_available():
        return False
    from ray._private.authentication.authentication_token_setup import (
        maybe_enable_token_auth_if_token_available,
    )

    return maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
