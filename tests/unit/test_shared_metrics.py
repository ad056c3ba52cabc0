"""Several HTTP processes, one view: the totals each publishes add up in any scrape,
a process started again continues from its predecessor's totals, and of one gauge
the latest measurement counts."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from myticket.telemetry.metrics import Metrics, MetricsReport, RefusalReason
from myticket.telemetry.shared_metrics import share_metrics

from ..prometheus_text import sample


def scrape(metrics: Metrics) -> str:
    return metrics.render([])[0].decode()


def test_each_process_scrape_shows_every_process_s_totals(tmp_path):
    first, second = Metrics(), Metrics()
    shares = [share_metrics(first, tmp_path, 0), share_metrics(second, tmp_path, 1)]
    for _ in range(3):
        first.accept()
    second.accept()
    second.refuse(RefusalReason.TOO_LARGE)
    first.observe_request(route="/ticket", method="POST", status=202, seconds=0.01)
    second.observe_request(route="/ticket", method="POST", status=202, seconds=0.2)
    first.set_backlog(7, oldest_received_at=datetime.now(timezone.utc) - timedelta(seconds=60))
    for metrics, share in zip((first, second), shares):
        share.publish(metrics.snapshot())

    for text in (scrape(first), scrape(second), scrape(first)):
        assert sample(text, "myticket_tickets_accepted_total") == 4
        assert sample(text, "myticket_tickets_refused_total", {"reason": "too_large"}) == 1
        assert sample(text, "myticket_tickets_refused_total", {"reason": "empty_body"}) == 0
        assert sample(text, "myticket_http_request_duration_seconds_count", {"route": "/ticket"}) == 2
        assert sample(text, "myticket_http_request_duration_seconds_bucket", {"route": "/ticket", "le": "0.01"}) == 1
        assert sample(text, "myticket_pending_tickets") == 7
        assert 60 <= sample(text, "myticket_oldest_pending_age_seconds") < 120


def test_a_process_started_again_continues_from_its_predecessor_s_totals(tmp_path):
    before = Metrics()
    share = share_metrics(before, tmp_path, 1)
    for _ in range(5):
        before.accept()
    share.publish(before.snapshot())

    after = Metrics()  # the same index, started again: its counters must not go down
    share_metrics(after, tmp_path, 1)
    after.accept()

    assert sample(scrape(after), "myticket_tickets_accepted_total") == 6


def test_of_one_gauge_the_latest_measurement_counts_wherever_it_comes_from():
    metrics = Metrics()
    metrics.set_backlog(0, measured_at=200.0)
    metrics.set_backlog(31, measured_at=100.0)  # a slower query that started earlier
    assert sample(scrape(metrics), "myticket_pending_tickets") == 0

    worker = Metrics()
    worker.set_backlog(12, measured_at=300.0)
    metrics.merge_report(worker.take_report())
    assert sample(scrape(metrics), "myticket_pending_tickets") == 12


def test_a_report_survives_its_json_form():
    metrics = Metrics()
    metrics.accept()
    metrics.processed("rejected", lag_seconds=0.3)
    metrics.set_spool(tickets=2, size=4096, spooling=True, max_bytes=1 << 30)
    report = metrics.snapshot()

    again = MetricsReport.from_json(report.to_json())

    assert again.counts == report.counts and again.gauges == report.gauges and again.gauge_times == report.gauge_times
    assert {key: (o.counts, o.total) for key, o in again.observations.items()} == {
        key: (o.counts, o.total) for key, o in report.observations.items()
    }
