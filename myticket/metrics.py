"""Prometheus metrics, one registry per application.

aioprometheus registers into a process-global registry unless told otherwise, and
registering a name twice raises; a per-app `Registry` lets tests build many apps. All
use of aioprometheus stays in this module so that replacing it touches one file.
"""

from __future__ import annotations

from collections.abc import Sequence

from aioprometheus import Counter, Gauge, Histogram, Registry
from aioprometheus.renderer import render

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
LAG_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = Registry()
        self.requests = Counter(
            "myticket_http_requests_total", "HTTP requests by route, method and status.", registry=self.registry
        )
        self.request_seconds = Histogram(
            "myticket_http_request_duration_seconds",
            "HTTP request latency by route.",
            registry=self.registry,
            buckets=LATENCY_BUCKETS,
        )
        self.tickets_accepted = Counter(
            "myticket_tickets_accepted_total",
            "Tickets acknowledged with 202 (stored durably).",
            registry=self.registry,
        )
        self.tickets_refused = Counter(
            "myticket_tickets_refused_total",
            "Tickets answered with a non-2xx, by reason.",
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "myticket_ingest_batch_size",
            "Tickets per group-commit batch.",
            registry=self.registry,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
        )
        self.tickets_processed = Counter(
            "myticket_tickets_processed_total",
            "Tickets processed by the worker, by outcome.",
            registry=self.registry,
        )
        self.pending_backlog = Gauge(
            "myticket_pending_tickets",
            "Tickets stored but not yet processed (as last seen by the worker).",
            registry=self.registry,
        )
        self.processing_lag = Histogram(
            "myticket_processing_lag_seconds",
            "Seconds from a ticket's reception to the end of its processing.",
            registry=self.registry,
            buckets=LAG_BUCKETS,
        )

    def observe_request(self, *, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.inc({"route": route, "method": method, "status": str(status)})
        self.request_seconds.add({"route": route}, seconds)

    def refuse(self, reason: str) -> None:
        self.tickets_refused.inc({"reason": reason})

    def render(self, accept_headers: Sequence[str]) -> tuple[bytes, dict[str, str]]:
        return render(self.registry, accept_headers)
