"""Prometheus metrics of a serving rank, served over HTTP on the rank's bind address."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, start_http_server

if TYPE_CHECKING:
    from mpi_workers.model_cache import LoadedModel

log = logging.getLogger(__name__)


class RankMetrics:
    def __init__(self, rank: int) -> None:
        self.registry = CollectorRegistry()
        labels = {"rank": str(rank)}
        r = self.registry
        self.requests = Counter("framestream_rank_requests", "requests answered, by op and outcome",
                                ["rank", "op", "outcome"], registry=r)
        self.refused = Counter("framestream_rank_refused", "messages answered with ERROR, by "
                               "code (malformed, forbidden control ops, bad shapes, ...)",
                               ["rank", "code"], registry=r)
        self.frames = Counter("framestream_rank_frames", "frames classified", ["rank"], registry=r
                              ).labels(**labels)
        self.batch_frames = Histogram("framestream_rank_batch_frames", "frames per forward pass",
                                      ["rank"], registry=r,
                                      buckets=(1, 5, 10, 20, 32, 64, 128, 256, 512, 1024)
                                      ).labels(**labels)
        self.latency = Histogram("framestream_rank_request_seconds",
                                 "time from receiving a request to sending its reply", ["rank"],
                                 registry=r, buckets=(.001, .0025, .005, .01, .025, .05, .1, .25,
                                                      .5, 1, 2.5, 5, 10)).labels(**labels)
        self.queue_depth = Gauge("framestream_rank_queue_depth",
                                 "requests drained from the socket in the last loop", ["rank"],
                                 registry=r).labels(**labels)
        self.model = Info("framestream_rank_model", "model version served by default", ["rank"],
                          registry=r).labels(**labels)
        self.runtime = Info("framestream_rank_runtime", "what runs each loaded version's model "
                            "step: runtime, the one asked for, and why they differ (fallback_reason "
                            "unavailable, export_failed, parity or device; empty when none)",
                            ["rank", "version"], registry=r)
        self.runtime_fallbacks = Counter("framestream_rank_runtime_fallbacks", "versions loaded "
                                         "with eager torch because the runtime asked for could not "
                                         "be built or failed the parity gate, by reason",
                                         ["rank", "reason"], registry=r)
        self._rank = str(rank)
        from models.runtime import FALLBACK_REASONS

        for reason in FALLBACK_REASONS:  # the series exist at 0 before the first fallback
            self.runtime_fallbacks.labels(rank=self._rank, reason=reason)

    def record_runtime(self, model: "LoadedModel") -> None:
        """``ModelCache``'s ``on_load``: the runtime of ``model`` (and a fallback, if any)."""
        choice = model.runtime
        if choice is None:
            return
        info = {"runtime": choice.runtime, "requested": choice.requested,
                "fallback_reason": choice.fallback_reason}
        if choice.parity is not None:
            info.update(parity_max_abs_diff=f"{choice.parity.max_abs_diff:.3g}",
                        parity_near_ties=str(choice.parity.near_ties))
        self.runtime.labels(rank=self._rank, version=model.version).info(info)
        if choice.fell_back:
            self.runtime_fallbacks.labels(rank=self._rank, reason=choice.fallback_reason).inc()

    def count(self, op: str, outcome: str) -> None:
        self.requests.labels(rank=self._rank, op=op, outcome=outcome).inc()

    def refuse(self, code: str) -> None:
        self.refused.labels(rank=self._rank, code=code[:40]).inc()

    def serve(self, addr: str, port: int) -> str:
        """Start the HTTP endpoint (port 0 = any free port); returns its URL."""
        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        url = f"http://{addr}:{server.server_port}/metrics"
        log.info("metrics at %s", url)
        return url
