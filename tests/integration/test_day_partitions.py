"""Tickets land in their day's partitions, which appear when a day has none."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

from myticket.archive.commands import purge_before
from myticket.core.ids import new_delivery_id, utc_day
from myticket.telemetry.metrics import Metrics
from myticket.worker.loop import TicketWorker
from myticket.web.typedefs import REPOSITORY

from ..helpers import post, settled, ticket_with

DAY_TABLES = [("deliveries",), ("idempotency_keys",), ("ticket_lines",), ("ticket_outcomes",)]


async def test_a_ticket_for_a_day_with_no_partition_is_stored_and_processed_in_one_made_for_it(quiet_app, db):
    repository = quiet_app.server.app[REPOSITORY]
    long_ago = datetime(2024, 2, 29, 12, 0, tzinfo=timezone.utc)
    assert db.rows("partitions_of_day", {"day": long_ago.date()}) == []
    ticket = ticket_with("1", "P1", "Leap", "1.00", received_at=long_ago)

    assert await repository.store_tickets(tickets=[ticket]) == 1
    await TicketWorker(repository, Metrics()).drain()

    assert db.rows("partitions_of_day", {"day": long_ago.date()}) == DAY_TABLES
    stored = await repository.ticket(ticket_id=ticket.id)
    assert (stored.status, stored.received_at, stored.line_count) == ("processed", long_ago, 1)


async def test_a_day_dropped_under_a_running_service_is_made_again_by_its_next_ticket(quiet_app, db):
    repository = quiet_app.server.app[REPOSITORY]
    _, received_at = new_delivery_id()
    first = ticket_with("1", "P1", "A", "1.00", received_at=received_at)
    await repository.store_tickets(tickets=[first])  # the service now knows today's partitions exist
    await TicketWorker(repository, Metrics()).drain()
    today = utc_day(received_at)
    assert db.value("drop_day", {"day": today}) == "purged"
    assert db.rows("partitions_of_day", {"day": today}) == []

    ticket_id = await post(quiet_app, b"Order: 2\n\nproduct,product_id,price\nB,P2,2.00\n")

    assert db.rows("partitions_of_day", {"day": today}) == DAY_TABLES
    assert db.rows("stored_ids") == [(ticket_id,)]


async def test_a_ticket_is_read_by_its_id_from_its_own_day(client):
    ticket_id = await post(client, b"Order: 7\n\nproduct,product_id,price\nA,P1,1.00\nB,P2,2.50\n")
    ticket = await settled(client, ticket_id)
    assert ticket["status"] == "processed"
    assert [line["product_id"] for line in ticket["lines"]] == ["P1", "P2"]
    received = datetime.fromisoformat(ticket["received_at"])
    assert abs(received - datetime.now(timezone.utc)) < timedelta(minutes=5)
    assert received.microsecond % 1000 == 0  # the millisecond the id carries


async def test_a_day_holding_no_ticket_is_purged_without_an_archive_as_it_has_nothing_to_lose(quiet_app, db):
    """A trial saw maintenance make a day's partitions again, empty, after its archive, and
    purge refuse it as 'archive outdated' forever."""
    repository = quiet_app.server.app[REPOSITORY]
    empty_day = date(2001, 6, 1)
    await repository.create_day_partitions(days=[empty_day])
    [result] = await purge_before(repository, before=date(2001, 6, 2), require_archive=True)
    assert (result.day, result.purged) == (empty_day, True)
    assert db.rows("partitions_of_day", {"day": empty_day}) == []
