"""Prometheus metrics, one registry per application.

aioprometheus registers into a process-global registry unless told otherwise, and
registering a name twice raises; a per-app `Registry` lets tests build many apps. All
use of aioprometheus stays in this module so that replacing it touches one file.

The hot path never calls aioprometheus: each of its updates serialises the label dict
to JSON, which cost about a tenth of a POST's CPU. Requests and tickets are tallied in
plain dicts and published into the collectors when /metrics is rendered. A worker in
its own process sends the same tallies to the HTTP process (`take_report` there,
`merge_report` here), so one /metrics shows both.
"""

from __future__ import annotations

import bisect
import enum
from collections import Counter as Tally
from collections.abc import Sequence
from dataclasses import dataclass

from aioprometheus import Counter, Gauge, Histogram, Registry
from aioprometheus import histogram as prometheus_histogram
from aioprometheus.renderer import render

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
LAG_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

Labels = tuple[tuple[str, str], ...]


class RefusalReason(enum.StrEnum):
    """Why POST /ticket did not store a ticket: the `reason` label of
    myticket_tickets_refused_total. The handler can only refuse with a member, and every
    member is exported at 0 from the start, so a new reason cannot be left out."""

    EMPTY_BODY = "empty_body"
    TOO_LARGE = "too_large"
    READ_TIMEOUT = "read_timeout"
    CLIENT_DISCONNECTED = "client_disconnected"
    BAD_SIGNATURE = "bad_signature"
    UNSUPPORTED_ENCODING = "unsupported_encoding"
    OVERLOADED = "overloaded"
    STORAGE_UNAVAILABLE = "storage_unavailable"
    SHUTTING_DOWN = "shutting_down"
    BAD_HEADER = "bad_header"
    STORE_FAILED = "store_failed"


# Why a replay attempt failed: the `cause` label of myticket_spool_replay_failures_total.
REPLAY_FAILURE_CAUSES = ("database_unavailable", "spool_unavailable", "unexpected")

# The worker's outcomes (the final ticket statuses): the `outcome` label of
# myticket_tickets_processed_total, each exported at 0 from the start.
PROCESSING_OUTCOMES = ("processed", "rejected", "duplicate")


class _Observations:
    """Histogram observations not yet published: counts per bucket, sum and count."""

    __slots__ = ("bounds", "counts", "total", "observations")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last slot is +Inf
        self.total = 0.0
        self.observations = 0

    def add(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.observations += 1

    def merge(self, other: _Observations) -> None:
        self.counts = [mine + theirs for mine, theirs in zip(self.counts, other.counts)]
        self.total += other.total
        self.observations += other.observations

    def publish_into(self, collector: Histogram, labels: dict[str, str]) -> None:
        try:
            target = collector.get_value(labels)
        except KeyError:
            target = prometheus_histogram.Histogram(*self.bounds)
            collector.set_value(labels, target)
        cumulative = 0
        # aioprometheus keeps cumulative counts per upper bound, +Inf last.
        for upper_bound, count in zip(target.buckets, self.counts):
            cumulative += count
            target.buckets[upper_bound] += cumulative
        target.sum += self.total
        target.observations += self.observations


@dataclass
class MetricsReport:
    """Tallies one process sends another: plain data, so it pickles through a pipe."""

    counts: Tally[tuple[str, Labels]]
    observations: dict[tuple[str, Labels], _Observations]
    gauges: dict[str, float]


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
            buckets=BATCH_BUCKETS,
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
        self.tickets_spooled = Counter(
            "myticket_tickets_spooled_total",
            "Tickets written to the local spool because PostgreSQL refused them.",
            registry=self.registry,
        )
        self.tickets_replayed = Counter(
            "myticket_tickets_replayed_total",
            "Spooled tickets moved into PostgreSQL.",
            registry=self.registry,
        )
        self.spool_tickets = Gauge(
            "myticket_spool_tickets", "Tickets waiting in the local spool.", registry=self.registry
        )
        self.spool_bytes = Gauge(
            "myticket_spool_bytes",
            "Bytes the local spool occupies on disk (file, WAL and shared memory).",
            registry=self.registry,
        )
        self.spool_quarantined_files = Gauge(
            "myticket_spool_quarantined_files",
            "Unreadable spool files moved aside, still in the spool directory.",
            registry=self.registry,
        )
        self.replay_failures = Counter(
            "myticket_spool_replay_failures_total",
            "Replay attempts that failed, by cause; the replayer retries each.",
            registry=self.registry,
        )
        self.days_archived = Counter(
            "myticket_retention_days_archived_total",
            "Days of tickets written to the archive directory by retention.",
            registry=self.registry,
        )
        self.days_purged = Counter(
            "myticket_retention_days_purged_total",
            "Days of tickets whose partitions retention dropped, after archiving them.",
            registry=self.registry,
        )
        self.maintenance_failures = Counter(
            "myticket_maintenance_failures_total",
            "Maintenance rounds (partitions ahead, retention) that failed; the next round retries.",
            registry=self.registry,
        )
        self.oldest_day_kept = Gauge(
            "myticket_oldest_day_kept_seconds",
            "UTC midnight, as unix seconds, of the oldest day whose tickets are still stored.",
            registry=self.registry,
        )
        self.synchronous_standby = Gauge(
            "myticket_database_synchronous_standby",
            "1 when commits wait for a streaming synchronous standby (a 202 survives the primary's machine), "
            "0 when they do not, as last seen by /ready.",
            registry=self.registry,
        )
        self._export_zeros()
        # Keyed by collector name: aioprometheus collectors define __eq__, not __hash__.
        self._counts: Tally[tuple[str, Labels]] = Tally()
        self._observations: dict[tuple[str, Labels], _Observations] = {}
        self._gauges: dict[str, float] = {}

    def _export_zeros(self) -> None:
        """Every counter whose label values are known starts at 0, so that rate() and
        alerts on it work before its first event (an absent series is not a zero)."""
        for counter in (
            self.tickets_accepted, self.tickets_spooled, self.tickets_replayed,
            self.days_archived, self.days_purged, self.maintenance_failures,
        ):
            counter.set({}, 0)
        for reason in RefusalReason:
            self.tickets_refused.set({"reason": reason.value}, 0)
        for outcome in PROCESSING_OUTCOMES:
            self.tickets_processed.set({"outcome": outcome}, 0)
        for cause in REPLAY_FAILURE_CAUSES:
            self.replay_failures.set({"cause": cause}, 0)

    def count(self, counter: Counter, labels: Labels = (), amount: int = 1) -> None:
        self._counts[(counter.name, labels)] += amount

    def observe(self, histogram: Histogram, value: float, labels: Labels = ()) -> None:
        key = (histogram.name, labels)
        pending = self._observations.get(key)
        if pending is None:
            pending = self._observations[key] = _Observations(histogram.upper_bounds)
        pending.add(value)

    def observe_request(self, *, route: str, method: str, status: int, seconds: float) -> None:
        self.count(self.requests, (("route", route), ("method", method), ("status", str(status))))
        self.observe(self.request_seconds, seconds, (("route", route),))

    def accept(self) -> None:
        self.count(self.tickets_accepted)

    def refuse(self, reason: RefusalReason) -> None:
        self.count(self.tickets_refused, (("reason", reason.value),))

    def processed(self, outcome: str, *, lag_seconds: float) -> None:
        self.count(self.tickets_processed, (("outcome", outcome),))
        self.observe(self.processing_lag, lag_seconds)

    def set_backlog(self, pending: int) -> None:
        self._gauges[self.pending_backlog.name] = pending

    def set_spool(self, *, tickets: int, size: int, quarantined_files: int = 0) -> None:
        self._gauges[self.spool_tickets.name] = tickets
        self._gauges[self.spool_bytes.name] = size
        self._gauges[self.spool_quarantined_files.name] = quarantined_files

    def replay_failed(self, cause: str) -> None:
        self.count(self.replay_failures, (("cause", cause),))

    def retention_done(self, *, archived: int, purged: int) -> None:
        self.count(self.days_archived, amount=archived)
        self.count(self.days_purged, amount=purged)

    def maintenance_failed(self) -> None:
        self.count(self.maintenance_failures)

    def set_oldest_day_kept(self, unix_seconds: float) -> None:
        self._gauges[self.oldest_day_kept.name] = unix_seconds

    def set_synchronous_standby(self, waits: bool) -> None:
        self._gauges[self.synchronous_standby.name] = 1 if waits else 0

    def take_report(self) -> MetricsReport:
        """What was tallied since the last report (gauges: their last values), and reset."""
        report = MetricsReport(self._counts, self._observations, self._gauges)
        self._counts, self._observations, self._gauges = Tally(), {}, {}
        return report

    def merge_report(self, report: MetricsReport) -> None:
        """Add another process's tallies to this one's, to be published at the next scrape."""
        self._counts.update(report.counts)
        for key, theirs in report.observations.items():
            mine = self._observations.get(key)
            if mine is None:
                self._observations[key] = theirs
            else:
                mine.merge(theirs)
        self._gauges.update(report.gauges)

    def _publish(self) -> None:
        counts, self._counts = self._counts, Tally()
        for (name, labels), amount in counts.items():
            self.registry.get(name).add(dict(labels), amount)
        observations, self._observations = self._observations, {}
        for (name, labels), pending in observations.items():
            pending.publish_into(self.registry.get(name), dict(labels))
        # Gauges keep their last value: publish without forgetting it.
        for name, value in self._gauges.items():
            self.registry.get(name).set({}, value)

    def render(self, accept_headers: Sequence[str]) -> tuple[bytes, dict[str, str]]:
        self._publish()
        return render(self.registry, accept_headers)
