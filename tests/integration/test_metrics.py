"""/metrics exposes what the test's own requests did."""

from __future__ import annotations

from datetime import datetime, timezone

from myticket.telemetry.metrics import PROCESSING_OUTCOMES, RefusalReason
from myticket.web.typedefs import METRICS, REPOSITORY
from myticket.worker.loop import TicketWorker

from ..helpers import post, sample, settled, ticket_with
from ..paths import PROJECT_ROOT, REFERENCE_TICKET
from ..waiting import wait_until


async def test_metrics_count_accepted_refused_and_requests(client, db):
    for _ in range(3):
        assert (await client.post("/ticket", data=REFERENCE_TICKET)).status == 202
    assert (await client.post("/ticket", data=b"")).status == 400
    assert (await client.get("/ping")).status == 200

    response = await client.get("/metrics")
    assert response.status == 200
    text = await response.text()

    assert sample(text, "myticket_tickets_accepted_total") == 3
    assert sample(text, "myticket_tickets_refused_total", {"reason": "empty_body"}) == 1
    assert sample(text, "myticket_http_requests_total", {"route": "/ticket", "method": "POST", "status": "202"}) == 3
    assert sample(text, "myticket_http_requests_total", {"route": "/ticket", "method": "POST", "status": "400"}) == 1
    assert sample(text, "myticket_http_requests_total", {"route": "/ping", "method": "GET", "status": "200"}) == 1
    assert sample(text, "myticket_http_request_duration_seconds_count", {"route": "/ticket"}) == 4


async def test_metrics_count_processing_outcomes_backlog_and_lag(client):
    await settled(client, await post(client, REFERENCE_TICKET))
    await settled(client, await post(client, b"not a ticket"))

    text = await (await client.get("/metrics")).text()

    assert sample(text, "myticket_tickets_processed_total", {"outcome": "processed"}) == 1
    assert sample(text, "myticket_tickets_processed_total", {"outcome": "rejected"}) == 1
    assert sample(text, "myticket_processing_lag_seconds_count") == 2


async def test_backlog_gauge_follows_pending_tickets(quiet_app):
    app = quiet_app.server.app
    worker = TicketWorker(app[REPOSITORY], app[METRICS])
    now = datetime.now(timezone.utc)
    await app[REPOSITORY].store_tickets(tickets=[ticket_with(str(n), "P", "N", "1", received_at=now) for n in range(3)])

    await worker.refresh_backlog(force=True)
    assert sample(await (await quiet_app.get("/metrics")).text(), "myticket_pending_tickets") == 3

    await worker.drain()
    await worker.refresh_backlog(force=True)
    assert sample(await (await quiet_app.get("/metrics")).text(), "myticket_pending_tickets") == 0


async def test_counters_with_known_labels_are_exported_at_zero_before_any_event(quiet_app):
    text = await (await quiet_app.get("/metrics")).text()

    assert 'myticket_tickets_refused_total{reason="too_large"} 0' in text.splitlines()
    for reason in RefusalReason:
        assert sample(text, "myticket_tickets_refused_total", {"reason": reason.value}) == 0, reason
    for outcome in PROCESSING_OUTCOMES:
        assert sample(text, "myticket_tickets_processed_total", {"outcome": outcome}) == 0, outcome
    for counter in (
        "myticket_tickets_accepted_total", "myticket_tickets_spooled_total", "myticket_tickets_replayed_total",
        "myticket_retention_days_archived_total", "myticket_retention_days_purged_total",
        "myticket_maintenance_failures_total",
    ):
        assert sample(text, counter) == 0, counter


async def test_the_oldest_day_kept_is_published_by_the_worker_s_maintenance_round(client, db):
    oldest_partition = min(
        datetime.strptime(name.removeprefix("deliveries_"), "%Y%m%d").replace(tzinfo=timezone.utc)
        for parent, name in db.rows("day_partition_names") if parent == "deliveries"
    )
    published: list[float | None] = []

    async def gauge_published() -> bool:
        published.append(sample(await (await client.get("/metrics")).text(), "myticket_oldest_day_kept_seconds"))
        return published[-1] is not None

    await wait_until(gauge_published, timeout=15, what="the first maintenance round")
    assert published[-1] == oldest_partition.timestamp()


async def test_a_refusal_adds_to_its_zero_series(quiet_app):
    assert (await quiet_app.post("/ticket", data=b"")).status == 400

    text = await (await quiet_app.get("/metrics")).text()
    assert sample(text, "myticket_tickets_refused_total", {"reason": "empty_body"}) == 1
    assert sample(text, "myticket_tickets_refused_total", {"reason": "too_large"}) == 0


def test_the_metrics_reference_lists_every_refusal_reason_and_outcome():
    reference = (PROJECT_ROOT / "docs" / "reference" / "metrics.md").read_text(encoding="utf-8")
    for label in [*RefusalReason, *PROCESSING_OUTCOMES]:
        assert f"`{label}`" in reference, label
