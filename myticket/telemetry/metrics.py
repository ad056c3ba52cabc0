"""Prometheus metrics, one registry per application.

aioprometheus registers into a process-global registry unless told otherwise, and
registering a name twice raises; a per-app `Registry` lets tests build many apps. All
use of aioprometheus stays in this module so that replacing it touches one file.

The hot path never calls aioprometheus: each of its updates serialises the label dict
to JSON, which cost about a tenth of a POST's CPU. Requests and tickets are tallied in
plain dicts and published into the collectors when /metrics is rendered. A worker in
its own process sends the same tallies to the HTTP process (`take_report` there,
`merge_report` here), so one /metrics shows both.

Each scrape renders this process's cumulative totals, plus, when several HTTP processes
share the port, the totals the others last published (`shared_metrics`): every
scrape shows the whole service, whichever process answers it.
"""

from __future__ import annotations

import bisect
import enum
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

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
    # One sender's abuse, refused for that sender only (issue 18): 429 past its share of
    # the body bytes or of the waiting tickets; 408 for a body slower than the minimum
    # rate; a connection closed at accept past the sender's or the process's cap.
    SENDER_SHARE = "sender_share"
    BODY_TOO_SLOW = "body_too_slow"
    SENDER_CONNECTIONS = "sender_connections"
    CONNECTIONS = "connections"


# Why a replay attempt failed: the `cause` label of myticket_spool_replay_failures_total.
REPLAY_FAILURE_CAUSES = ("database_unavailable", "spool_unavailable", "unexpected")

# The worker's outcomes (the final ticket statuses): the `outcome` label of
# myticket_tickets_processed_total, each exported at 0 from the start.
PROCESSING_OUTCOMES = ("processed", "rejected", "duplicate")


def pending_age_seconds(oldest_received_at: datetime | None, now: datetime | None = None) -> float:
    """Age of the oldest pending ticket, 0 when none is pending (never negative: clocks of
    several hosts may disagree by a little)."""
    if oldest_received_at is None:
        return 0.0
    now = now if now is not None else datetime.now(timezone.utc)
    return max(0.0, (now - oldest_received_at).total_seconds())


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

    def copy(self) -> _Observations:
        copied = _Observations(self.bounds)
        copied.merge(self)
        return copied

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
    """Tallies one process sends another: plain data, so it pickles through a pipe.

    Also a process's cumulative totals (`Metrics.totals`). `gauge_times` says when each
    gauge was last set (unix seconds): of several processes' values, the latest counts.
    """

    counts: Tally[tuple[str, Labels]]
    observations: dict[tuple[str, Labels], _Observations]
    gauges: dict[str, float]
    gauge_times: dict[str, float] = field(default_factory=dict)

    @classmethod
    def empty(cls) -> MetricsReport:
        return cls(Tally(), {}, {}, {})

    def add(self, other: MetricsReport) -> None:
        """Add `other`'s counts and observations to these; keep the later of each gauge."""
        self.counts.update(other.counts)
        for key, theirs in other.observations.items():
            mine = self.observations.get(key)
            if mine is None:
                self.observations[key] = theirs.copy()
            else:
                mine.merge(theirs)
        for name, value in other.gauges.items():
            when = other.gauge_times.get(name, 0.0)
            if name not in self.gauges or when >= self.gauge_times.get(name, 0.0):
                self.gauges[name] = value
                self.gauge_times[name] = when

    def copy(self) -> MetricsReport:
        copied = MetricsReport.empty()
        copied.add(self)
        return copied

    def to_json(self) -> dict[str, Any]:
        """Plain JSON data (a file other processes read: no pickle to trust)."""
        return {
            "counts": [[name, [list(pair) for pair in labels], amount] for (name, labels), amount in self.counts.items()],
            "observations": [
                [name, [list(pair) for pair in labels], list(o.bounds), o.counts, o.total, o.observations]
                for (name, labels), o in self.observations.items()
            ],
            "gauges": [[name, value, self.gauge_times.get(name, 0.0)] for name, value in self.gauges.items()],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MetricsReport:
        report = cls.empty()
        for name, labels, amount in data["counts"]:
            report.counts[(name, tuple((key, value) for key, value in labels))] = amount
        for name, labels, bounds, counts, total, observations in data["observations"]:
            observed = _Observations(tuple(bounds))
            observed.counts, observed.total, observed.observations = list(counts), total, observations
            report.observations[(name, tuple((key, value) for key, value in labels))] = observed
        for name, value, when in data["gauges"]:
            report.gauges[name], report.gauge_times[name] = value, when
        return report


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
        self.oldest_pending_age = Gauge(
            "myticket_oldest_pending_age_seconds",
            "Seconds since the oldest pending ticket was received (0 when none is pending), as last seen by the worker.",
            registry=self.registry,
        )
        self.database_up = Gauge(
            "myticket_database_up",
            "1 when the worker's last query answered, 0 while PostgreSQL is unavailable to it.",
            registry=self.registry,
        )
        self.spooling = Gauge(
            "myticket_spooling",
            "1 while new tickets go to the local spool instead of PostgreSQL.",
            registry=self.registry,
        )
        self.spool_max_bytes = Gauge(
            "myticket_spool_max_bytes",
            "The spool's cap in bytes (MYTICKET_SPOOL_MAX_BYTES): beyond it, tickets are refused.",
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
        self._gauge_times: dict[str, float] = {}
        # Everything counted in this process so far (the pending tallies are added at each
        # scrape or share), and where the other HTTP processes' totals are read from.
        self.totals = MetricsReport.empty()
        self.peers: Callable[[], Iterable[MetricsReport]] = tuple

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

    def _set(self, gauge: Gauge, value: float, measured_at: float | None = None) -> None:
        self._set_gauge(gauge.name, value, measured_at if measured_at is not None else time.time())

    def _set_gauge(self, name: str, value: float, measured_at: float) -> None:
        """Keep `value` unless a later measurement is known (several worker loops measure
        the backlog, and the one that started first may answer last)."""
        latest = self._gauge_times.get(name, self.totals.gauge_times.get(name))
        if latest is None or measured_at >= latest:
            self._gauges[name] = value
            self._gauge_times[name] = measured_at

    def set_backlog(
        self, pending: int, *, oldest_received_at: datetime | None = None, measured_at: float | None = None
    ) -> None:
        """The backlog, and the age of its oldest ticket (0 when it is empty), as measured
        by a query that started at `measured_at` (unix seconds; default now)."""
        self._set(self.pending_backlog, pending, measured_at)
        self._set(self.oldest_pending_age, pending_age_seconds(oldest_received_at), measured_at)

    def set_database_up(self, up: bool) -> None:
        self._set(self.database_up, 1 if up else 0)

    def set_spool(
        self, *, tickets: int, size: int, quarantined_files: int = 0,
        spooling: bool | None = None, max_bytes: int | None = None,
    ) -> None:
        self._set(self.spool_tickets, tickets)
        self._set(self.spool_bytes, size)
        self._set(self.spool_quarantined_files, quarantined_files)
        if spooling is not None:
            self._set(self.spooling, 1 if spooling else 0)
        if max_bytes is not None:
            self._set(self.spool_max_bytes, max_bytes)

    def replay_failed(self, cause: str) -> None:
        self.count(self.replay_failures, (("cause", cause),))

    def retention_done(self, *, archived: int, purged: int) -> None:
        self.count(self.days_archived, amount=archived)
        self.count(self.days_purged, amount=purged)

    def maintenance_failed(self) -> None:
        self.count(self.maintenance_failures)

    def set_oldest_day_kept(self, unix_seconds: float) -> None:
        self._set(self.oldest_day_kept, unix_seconds)

    def set_synchronous_standby(self, waits: bool) -> None:
        self._gauges[self.synchronous_standby.name] = 1 if waits else 0

    def take_report(self) -> MetricsReport:
        """What was tallied since the last report (gauges: their last values), and reset."""
        report = MetricsReport(self._counts, self._observations, self._gauges, self._gauge_times)
        self._counts, self._observations, self._gauges, self._gauge_times = Tally(), {}, {}, {}
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
        for name, value in report.gauges.items():
            self._set_gauge(name, value, report.gauge_times.get(name, time.time()))

    def snapshot(self) -> MetricsReport:
        """This process's totals so far, the pending tallies included (they move into them)."""
        self.totals.add(self.take_report())
        return self.totals

    def _publish(self, combined: MetricsReport) -> None:
        """Set every collector to `combined`: cumulative values, rebuilt at each scrape."""
        for collector in self.registry.get_all():
            collector.values.clear()
        self._export_zeros()
        for (name, labels), amount in combined.counts.items():
            self.registry.get(name).set(dict(labels), amount)
        for (name, labels), observed in combined.observations.items():
            observed.publish_into(self.registry.get(name), dict(labels))
        for name, value in combined.gauges.items():
            self.registry.get(name).set({}, value)

    def render(self, accept_headers: Sequence[str]) -> tuple[bytes, dict[str, str]]:
        combined = self.snapshot().copy()
        for peer in self.peers():
            combined.add(peer)
        self._publish(combined)
        return render(self.registry, accept_headers)
