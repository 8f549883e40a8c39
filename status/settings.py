"""The status service's settings (``FRAMESTREAM_STATUS_*``) and its bind policy."""

from __future__ import annotations

from pathlib import Path

from framestream.errors import ConfigError
from framestream.paths import state_dir
from framestream.security import is_loopback
from framestream.settings import Section, section, setting


class StatusSettings(Section):
    """Where the page listens and what it reads."""

    model_config = section("status")

    host: str = setting("127.0.0.1", "address the status page listens on (loopback unless "
                                     "FRAMESTREAM_STATUS_ALLOW_REMOTE)")
    port: int = setting(8765, "the status page's TCP port (0 = any free)",
                        ok=lambda v: 0 <= v < 65536, expected="a TCP port (0 = any free)")
    # The page has no login: anyone who reaches it sees dead letters' details. Off loopback only
    # when this is set explicitly (--allow-remote), like the ranks' --insecure.
    allow_remote: bool = setting(False, "serve the page beyond this host (it has no login)")
    state: Path = setting(doc="the state folder the page reads (runs log, registry, endpoints)",
                          factory=state_dir, shown="<state>")
    registry: Path | None = setting(None, "model registry root (empty = <state>/registry)")
    endpoints_file: Path | None = setting(None, "the ranks' endpoint file "
                                                "(empty = <state>/endpoints.json)")
    checkpoint: Path | None = setting(None, "the stream's checkpoint folder, for each "
                                            "micro-batch's pinned model version (empty = "
                                            "<state>/checkpoints/stream)")
    refresh_s: float = setting(1.0, "seconds between the page's refreshes",
                               ok=lambda v: 0.1 <= v <= 60, expected="0.1..60")
    latency_window: int = setting(5000, "latency samples kept for the percentiles",
                                  ok=lambda v: v >= 10, expected=">= 10")
    scrape_timeout_s: float = setting(1.0, "seconds to wait for a rank's metrics",
                                      ok=lambda v: v > 0, expected="> 0")
    # Links: these addresses first, else found (status/links.py); shown while they answer.
    spark_ui: str = setting("", "link to Spark's UI (empty = the one a stream driver of the "
                                "frames topic announced in <state>/ui/)")
    ray_dashboard: str = setting("", "link to Ray's dashboard (empty = the one Ray reported to "
                                     "a launcher, <state>/gangs/)")
    link_check_s: float = setting(5.0, "seconds between checks that a linked UI answers",
                                  ok=lambda v: v > 0, expected="> 0")

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
