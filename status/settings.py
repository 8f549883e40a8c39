"""The status service's settings (``FRAMESTREAM_STATUS_*``) and its bind policy."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from framestream.errors import ConfigError
from framestream.paths import state_dir
from framestream.security import is_loopback
from framestream.settings import check, settings_section


@settings_section("status")
@dataclass(frozen=True)
class StatusSettings:
    """Where the page listens and what it reads."""

    host: str = "127.0.0.1"
    port: int = field(default=8765, metadata=check(lambda v: 0 <= v < 65536,
                                                   "a TCP port (0 = any free)"))
    # The page has no login: anyone who reaches it sees dead letters' details. Off loopback only
    # when this is set explicitly (--allow-remote), like the ranks' --insecure.
    allow_remote: bool = False
    state: Path = field(default_factory=state_dir)
    registry: Path | None = None          # default <state>/registry
    endpoints_file: Path | None = None    # default <state>/endpoints.json
    checkpoint: Path | None = None        # the stream's; default <state>/checkpoints/stream
    refresh_s: float = field(default=1.0, metadata=check(lambda v: 0.1 <= v <= 60, "0.1..60"))
    latency_window: int = field(default=5000, metadata=check(lambda v: v >= 10, ">= 10"))
    scrape_timeout_s: float = field(default=1.0, metadata=check(lambda v: v > 0, "> 0"))
    # Links: these addresses first, else found (status/links.py); shown while they answer.
    spark_ui: str = ""
    ray_dashboard: str = ""
    link_check_s: float = field(default=5.0, metadata=check(lambda v: v > 0, "> 0"))

    @property
    def registry_root(self) -> Path:
        return self.registry or self.state / "registry"

    @property
    def endpoints_path(self) -> Path:
        return self.endpoints_file or self.state / "endpoints.json"

    @property
    def pins_dir(self) -> Path:
        """Where the driver pins each micro-batch's model version (etl/pins.py)."""
        return (self.checkpoint or self.state / "checkpoints" / "stream") / "framestream-pins"

    @property
    def runs_log(self) -> Path:
        return self.state / "retrain" / "runs.jsonl"

    def check_bind(self) -> None:
        """Refuse a non-loopback host unless allow_remote: the page has no authentication."""
        if not is_loopback(self.host) and not self.allow_remote:
            raise ConfigError("FRAMESTREAM_STATUS_HOST", self.host,
                              "a loopback address (the page has no login); pass --allow-remote "
                              "(--status-allow-remote to the stream job, or "
                              "FRAMESTREAM_STATUS_ALLOW_REMOTE=1) to serve it beyond this host")
