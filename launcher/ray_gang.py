"""A gang reserved on Ray: the placement group, one holder per bundle, the mpirun layout on them.

``RayGang.acquire()`` drives :class:`launcher.reservation.ReservationPolicy` (reserve with a
deadline; on timeout remove the group, back off, retry; then fail saying what was asked, what
was free and which flag to change), starts the holders, writes the hostfile and returns the
:class:`launcher.mpirun.GangLaunch` to start mpirun with. ``release()`` gives everything back and
waits until Ray reports the group removed; it runs on normal exit, on errors and on Ctrl-C
(``with RayGang(...) as gang``). If the launching process is killed outright, Ray removes the
group and the holders with the job that created them.

Raises (``acquire``): GangReservationTimeout, DeadlineExceeded (holders), FramestreamError.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from framestream.errors import FramestreamError
from launcher.errors import GangReservationTimeout
from launcher.holders import address_of, start_holders, stop_holders
from launcher.layout import BundleInfo, MpiLayout, plan
from launcher.mpirun import GangLaunch
from launcher.placement import release as remove_group
from launcher.policy import GiveUp, Nothing, Wait
from launcher.reservation import ClusterView, Release, Reserve, ReservationPolicy, RState
from launcher.rsh import RshServer
from launcher.settings import LauncherSettings

if TYPE_CHECKING:
    from ray.actor import ActorHandle
    from ray.util.placement_group import PlacementGroup

log = logging.getLogger(__name__)


class GangCancelled(FramestreamError):
    """The reservation was cancelled (Ctrl-C, SIGTERM, stop) before it completed."""


def cluster_view() -> ClusterView:
    import ray

    nodes = tuple(dict(n["Resources"]) for n in ray.nodes() if n.get("Alive"))
    return ClusterView(dict(ray.available_resources()), dict(ray.cluster_resources()), nodes)


class RayGang:
    def __init__(self, name: str, settings: LauncherSettings, run_dir: Path, *,
                 rng: random.Random | None = None, cancel: threading.Event | None = None) -> None:
        self.name, self.settings, self.run_dir = name, settings, Path(run_dir)
        self.bundles = [settings.bundle() for _ in range(settings.ranks)]
        self.policy = ReservationPolicy(self.bundles, settings.strategy, settings.timeout_s,
                                        settings.retries, settings.backoff_s,
                                        settings.backoff_max_s, settings.jitter,
                                        rng or random.Random())
        self.cancel_event = cancel or threading.Event()
        self.pg: "PlacementGroup | None" = None
        self.holders: list["ActorHandle"] = []
        self.bundle_infos: list[BundleInfo] = []
        self.layout: MpiLayout | None = None
        self.launch: GangLaunch | None = None
        self.rsh: RshServer | None = None
        self.reserve_s = 0.0
        self._lock = threading.Lock()

    # -- reservation -------------------------------------------------------------------------

    def _wait_ready(self, pg: "PlacementGroup", timeout_s: float) -> bool:
        """Wait in 1 s slices (so a cancel is noticed): Ray's wait takes whole seconds -- a
        fraction becomes 0, an immediate answer, and a loop of those would spin on the GCS."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left >= 1.0:
                ready = pg.wait(timeout_seconds=1)
            else:
                self.cancel_event.wait(max(0.0, left))
                ready = pg.wait(timeout_seconds=0)
            if ready:
                return True
            if self.cancel_event.is_set():
                raise GangCancelled(f"reservation of gang {self.name} cancelled")
            if left < 1.0:
                return False

    def _reserve(self) -> None:
        from ray.util.placement_group import placement_group

        started = time.monotonic()
        action = self.policy.start()
        while True:
            if isinstance(action, Reserve):
                log.info("gang %s: reserving %d x %s (%s), attempt %d, up to %gs", self.name,
                         len(self.bundles), self.bundles[0], self.settings.strategy,
                         action.attempt, action.timeout_s)
                self.pg = placement_group(self.bundles, strategy=self.settings.strategy,
                                          name=self.name)
                if self._wait_ready(self.pg, action.timeout_s):
                    action = self.policy.ready()
                else:
                    action = self.policy.timed_out(cluster_view())
            elif isinstance(action, Release):
                self._remove_group()
                action = self.policy.released()
            elif isinstance(action, Wait):
                log.warning("gang %s: not reserved in %gs; released, retrying in %.1fs", self.name,
                            self.settings.timeout_s, action.seconds)
                if self.cancel_event.wait(action.seconds):
                    self.policy.cancel()
                    raise GangCancelled(f"reservation of gang {self.name} cancelled")
                action = self.policy.backoff_done()
            elif isinstance(action, GiveUp):
                view = self.policy.last_view or ClusterView({}, {})
                raise GangReservationTimeout(self.bundles, self.settings.strategy,
                                             self.policy.waited_s, view.free, "",  # the reason
                                             detail=action.reason,  # names the flag to change
                                             attempts=self.policy.attempt)
            elif isinstance(action, Nothing) and self.policy.state is RState.RESERVED:
                self.reserve_s = time.monotonic() - started
                log.info("gang %s: reserved in %.2fs", self.name, self.reserve_s)
                return
            else:  # pragma: no cover - the policy only returns the actions above
                raise RuntimeError(f"unexpected reservation action {action!r}")

    def _remove_group(self) -> None:
        pg, self.pg = self.pg, None
        if pg is not None:
            remove_group(pg)

    def acquire(self) -> GangLaunch:
        """Reserve the gang, start its holders, write its hostfile; see the module docstring."""
        import ray

        try:
            self._reserve()
            assert self.pg is not None
            self.holders, self.bundle_infos = start_holders(
                self.pg, self.bundles, self.name, self.settings.holder_timeout_s)
            me = address_of(ray.util.get_node_ip_address())
            agent = self.settings.rsh_agent
            if agent == "ray" and any(b.node_ip != me.ip for b in self.bundle_infos):
                by_host: dict[str, ActorHandle] = {}
                for b, h in zip(self.bundle_infos, self.holders):
                    by_host.setdefault(b.node_ip, h)
                    by_host.setdefault(b.hostname, h)
                self.rsh = RshServer(by_host, self.settings.rsh_timeout_s)
                agent = str(self.rsh.agent)
            self.layout = plan(self.bundle_infos, me, rsh_agent=None if agent == "ssh" else agent,
                               if_include=self.settings.mpi_if_include,
                               environ=_rank_env_overrides())
            self.run_dir.mkdir(parents=True, exist_ok=True)
            hostfile = self.run_dir / "hostfile"
            hostfile.write_text(self.layout.hostfile_text())
            self.launch = GangLaunch(self.layout, hostfile)
            log.info("gang %s: %d ranks on %s", self.name, self.layout.ranks,
                     ", ".join(f"{h} ({n})" for h, n in self.layout.hosts))
            return self.launch
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        """Stop the holders and remove the placement group; idempotent, safe from any state."""
        with self._lock:
            if self.rsh is not None:
                self.rsh.close()
                self.rsh = None
            if self.holders:
                stop_holders(self.holders)
                self.holders = []
            if self.policy.state is RState.RESERVED:
                self.policy.finish()
            elif self.policy.state is not RState.RELEASED:
                self.policy.cancel()
            self._remove_group()
            if self.policy.state is RState.RELEASING:
                self.policy.released()
            if self.launch is not None:
                self.launch.hostfile.unlink(missing_ok=True)
                try:
                    self.run_dir.rmdir()  # kept when it holds the ranks' logs
                except OSError:
                    pass
            log.info("gang %s: released", self.name)

    def __enter__(self) -> "RayGang":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def describe(self) -> dict[str, Any]:
        """Bundles, nodes and rank placement, for ``python -m launcher status``."""
        ranks = []
        if self.layout is not None:
            hosts = self.layout.rank_hosts()
            ranks = [{"rank": r, "bundle": b, "host": hosts[r]}
                     for r, b in enumerate(self.layout.rank_bundles)]
        return {"name": self.name, "strategy": self.settings.strategy,
                "placement_group": self.pg.id.hex() if self.pg is not None else None,
                "reservation": self.policy.state.value, "attempts": self.policy.attempt,
                "reserve_s": round(self.reserve_s, 3),
                "bundles": [{**b.to_dict(), "resources": self.bundles[b.index]}
                            for b in self.bundle_infos],
                "ranks": ranks}


def _rank_env_overrides() -> dict[str, str]:
    """Per-rank variables the user already set explicitly win over the layout's."""
    import os

    keys = ("FRAMESTREAM_SERVE_BIND", "GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME")
    return {k: os.environ[k] for k in keys if k in os.environ}
