"""Processing through HTTP, the worker and a real database."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from myticket.telemetry.metrics import Metrics
from myticket.core.parser import parse_ticket
from myticket.core.domain import IncomingTicket
from myticket.web.typedefs import REPOSITORY
from myticket.worker.loop import TicketWorker

from ..helpers import post, settled, ticket_with
from ..paths import PROJECT_ROOT, REFERENCE_TICKET
from ..waiting import wait_until


async def test_reference_ticket_is_processed_into_lines_and_products(client):
    ticket = await settled(client, await post(client, REFERENCE_TICKET))

    assert ticket["status"] == "processed"
    assert (ticket["order_ref"], ticket["vat"], ticket["total"]) == ("123456", "3.10", "16.90")
    assert ticket["warnings"] == [] and ticket["error"] is None
    assert ticket["lines"] == [
        {"line_number": 6, "product_id": "aZde", "name": "Formule(s) midi", "price": "14.90"},
        {"line_number": 7, "product_id": "IZ8z", "name": "Café", "price": "2.00"},
    ]
    product = await (await client.get("/products/IZ8z")).json()
    assert (product["name"], product["price"], product["times_seen"]) == ("Café", "2.00", 1)


async def test_malformed_ticket_is_rejected_with_its_reason_and_adds_no_product(client):
    ticket = await settled(client, await post(client, REFERENCE_TICKET.replace(b",2\n", b",abc\n")))

    assert ticket["status"] == "rejected"
    assert ticket["error"] == 'line 7: price "abc" is not a number'
    assert ticket["lines"] == []
    assert (await (await client.get("/products")).json())["products"] == []


async def test_same_bytes_again_is_a_duplicate_and_not_counted_twice(client, db):
    first = await settled(client, await post(client, REFERENCE_TICKET))
    again = await settled(client, await post(client, REFERENCE_TICKET))

    assert first["status"] == "processed"
    assert again["status"] == "duplicate"
    assert again["duplicate_of"] == first["id"]
    assert again["lines"] == []
    assert db.value("count_lines") == 2
    assert (await (await client.get("/products/aZde")).json())["times_seen"] == 1


async def test_warnings_are_stored_and_never_reject(client):
    body = REFERENCE_TICKET.replace(b"Total: 16.90", b"Total: 20.00") + b"Caf\xc3\xa9,IZ8z,2.50\n"
    ticket = await settled(client, await post(client, body))

    assert ticket["status"] == "processed"
    assert "product_id IZ8z appears 2 times" in ticket["warnings"]
    assert any(warning.startswith("Total 20.00 differs") for warning in ticket["warnings"])
    assert [line["price"] for line in ticket["lines"]] == ["14.90", "2.00", "2.50"]
    product = await (await client.get("/products/IZ8z")).json()
    assert (product["price"], product["times_seen"]) == ("2.50", 1)


async def test_latest_received_price_wins_when_processed_out_of_order(quiet_app):
    repository = quiet_app.server.app[REPOSITORY]
    worker = TicketWorker(repository, Metrics())
    earlier = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)
    later = earlier + timedelta(hours=1)

    await repository.store_tickets(tickets=[ticket_with("2", "P1", "New name", "3.00", received_at=later)])
    assert await worker.drain() == 1
    await repository.store_tickets(tickets=[ticket_with("1", "P1", "Old name", "2.00", received_at=earlier)])
    assert await worker.drain() == 1

    product = await repository.product(product_id="P1")
    assert (product.name, product.price) == ("New name", Decimal("3.00"))
    assert (product.first_seen_at, product.last_seen_at, product.times_seen) == (earlier, later, 2)


async def test_two_workers_process_2000_tickets_each_exactly_once(quiet_app, db):
    repository = quiet_app.server.app[REPOSITORY]
    received = datetime.now(timezone.utc)
    tickets = [
        ticket_with(str(number), f"P{number % 50}", f"Product {number % 50}", f"{number % 7}.50", received_at=received)
        for number in range(2000)
    ]
    for start in range(0, len(tickets), 250):
        await repository.store_tickets(tickets=tickets[start:start + 250])

    first, second = TicketWorker(repository, Metrics(), batch_size=100), TicketWorker(repository, Metrics(), batch_size=100)
    handled = await asyncio.gather(first.drain(), second.drain())

    assert sum(handled) == 2000
    assert db.rows("status_counts") == [("processed", 2000)]
    assert db.value("count_lines") == 2000
    assert db.value("sum_times_seen") == 2000


async def test_a_worker_that_dies_mid_batch_leaves_its_tickets_pending(quiet_app, db):
    repository = quiet_app.server.app[REPOSITORY]
    await repository.store_tickets(
        tickets=[ticket_with("1", "P1", "A", "1.00", received_at=datetime.now(timezone.utc))]
    )

    with pytest.raises(RuntimeError):
        async with repository.claim_pending(limit=10, max_bytes=1024 * 1024, line_cost=0) as batch:
            assert len(batch.tickets) == 1
            raise RuntimeError("worker died")

    assert db.rows("status_counts") == [("pending", 1)]
    assert await TicketWorker(repository, Metrics()).drain() == 1
    assert db.rows("status_counts") == [("processed", 1)]


async def test_failing_ticket_is_rejected_after_bounded_retries_then_reprocessed(quiet_app, db, database_url):
    repository = quiet_app.server.app[REPOSITORY]
    poison = b"Order: POISON\n\nproduct,product_id,price\nA,P1,1\n"

    def parse_or_crash(body: bytes):
        if b"POISON" in body:
            raise RuntimeError("parser bug")
        return parse_ticket(body)

    now = datetime.now(timezone.utc)
    bad = IncomingTicket(str(uuid.uuid4()), now, None, poison)
    good = ticket_with("2", "P2", "B", "2.00", received_at=now)
    await repository.store_tickets(tickets=[bad, good])

    metrics = Metrics()
    crashing = TicketWorker(repository, metrics, max_attempts=3, parse=parse_or_crash)
    # A drain that never rejects the ticket would loop forever: fail by assertion instead.
    draining = asyncio.create_task(crashing.drain())
    try:
        await wait_until(lambda: _done(draining), timeout=15, what="the drain to reject the failing ticket and end")
    finally:
        draining.cancel()
    assert draining.result() == 1  # the good ticket; the bad one was charged, not handled

    rejected = await repository.ticket(ticket_id=bad.id)
    assert rejected.status == "rejected"
    assert rejected.attempts == 3
    assert rejected.error == "processing failed 3 times: RuntimeError: parser bug"
    assert (await repository.ticket(ticket_id=good.id)).status == "processed"
    # Failures of a living worker are not deaths: no claim of theirs is left in the journal.
    assert db.value("worker_claims_left") == 0
    # Rejected after its retries, it is counted like any outcome, with its lag.
    report = metrics.take_report()
    assert report.counts[("myticket_tickets_processed_total", (("outcome", "rejected"),))] == 1
    assert report.counts[("myticket_tickets_processed_total", (("outcome", "processed"),))] == 1
    assert report.observations["myticket_processing_lag_seconds", ()].observations == 2

    worker = TicketWorker(repository, Metrics(), max_attempts=3)
    result = subprocess.run(
        [sys.executable, "-m", "myticket", "reprocess", "--status", "rejected", "--since", "2000-01-01"],
        cwd=PROJECT_ROOT, env={**os.environ, "DATABASE_URL": database_url, "LOG_LEVEL": "WARNING"},
        capture_output=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().strip() == "1 rejected tickets put back to pending"

    assert await worker.drain() == 1
    fixed = await repository.ticket(ticket_id=bad.id)
    assert (fixed.status, fixed.error, fixed.attempts) == ("processed", None, 0)
    lines, _ = await repository.ticket_lines(ticket_id=bad.id, after=0, limit=100)
    assert [line.product_id for line in lines] == ["P1"]


async def test_one_drain_charges_a_failing_ticket_and_gives_up_after_max_attempts(quiet_app):
    """Asserted on the state right after one drain: a worker that never charged, or
    charged without giving up, would retry for ever; the parser stops the drain instead
    on the attempt past the bound."""
    repository = quiet_app.server.app[REPOSITORY]
    failing = IncomingTicket(str(uuid.uuid4()), datetime.now(timezone.utc), None, b"Order: 1\n")
    await repository.store_tickets(tickets=[failing])
    attempts = 0
    stop = asyncio.Event()

    def parse_that_crashes(body: bytes):
        nonlocal attempts
        attempts += 1
        if attempts > 3:
            stop.set()  # the drain ends after this attempt
        raise RuntimeError("parser bug")

    handled = await TicketWorker(repository, Metrics(), max_attempts=3, parse=parse_that_crashes).drain(stop)

    state = await repository.ticket(ticket_id=failing.id)
    assert (state.status, state.attempts, attempts) == ("rejected", 3, 3)
    assert state.error == "processing failed 3 times: RuntimeError: parser bug"
    assert handled == 0  # charged, not handled
    assert await repository.count_pending() == 0


async def test_read_api_paginates_products_and_answers_404_json(quiet_app):
    repository = quiet_app.server.app[REPOSITORY]
    now = datetime.now(timezone.utc)
    await repository.store_tickets(
        tickets=[ticket_with(str(n), f"P{n}", f"N{n}", "1.00", received_at=now) for n in range(5)]
    )
    await TicketWorker(repository, Metrics()).drain()

    first_page = await (await quiet_app.get("/products?limit=2")).json()
    assert [p["product_id"] for p in first_page["products"]] == ["P0", "P1"]
    assert first_page["next_after"] == "P1"
    rest = await (await quiet_app.get("/products?limit=10&after=P1")).json()
    assert [p["product_id"] for p in rest["products"]] == ["P2", "P3", "P4"]
    assert rest["next_after"] is None

    for path in ("/products/NOPE", f"/tickets/{uuid.uuid4()}", "/tickets/not-a-uuid"):
        response = await quiet_app.get(path)
        assert response.status == 404
        assert "error" in await response.json()
    bad_limit = await quiet_app.get("/products?limit=0")
    assert bad_limit.status == 400
    assert "limit" in (await bad_limit.json())["error"]


async def test_a_full_last_page_of_products_has_no_next_page(quiet_app):
    repository = quiet_app.server.app[REPOSITORY]
    now = datetime.now(timezone.utc)
    await repository.store_tickets(
        tickets=[ticket_with(str(n), f"P{n}", f"N{n}", "1.00", received_at=now) for n in range(4)]
    )
    await TicketWorker(repository, Metrics()).drain()

    first = await (await quiet_app.get("/products?limit=2")).json()
    assert [p["product_id"] for p in first["products"]] == ["P0", "P1"]
    assert first["next_after"] == "P1"
    last = await (await quiet_app.get(f"/products?limit=2&after={first['next_after']}")).json()
    assert [p["product_id"] for p in last["products"]] == ["P2", "P3"]
    assert last["next_after"] is None
    whole = await (await quiet_app.get("/products?limit=4")).json()
    assert len(whole["products"]) == 4 and whole["next_after"] is None


async def test_identical_bodies_on_two_workers_give_one_processed_and_the_rest_duplicates(quiet_app, db):
    repository = quiet_app.server.app[REPOSITORY]
    now = datetime.now(timezone.utc)
    await repository.store_tickets(
        tickets=[IncomingTicket(str(uuid.uuid4()), now, "text/html", REFERENCE_TICKET) for _ in range(300)]
    )

    first, second = TicketWorker(repository, Metrics(), batch_size=20), TicketWorker(repository, Metrics(), batch_size=20)
    handled = await asyncio.gather(first.drain(), second.drain())

    assert sum(handled) == 300
    assert db.rows("status_counts") == [("duplicate", 299), ("processed", 1)]
    assert db.value("count_lines") == 2
    assert db.value("sum_times_seen") == 2


async def test_idle_worker_wakes_on_the_batch_notify_not_on_its_poll(quiet_app, db):
    repository = quiet_app.server.app[REPOSITORY]
    # A poll interval far beyond the wait below: only the NOTIFY can wake the worker in time.
    worker = TicketWorker(repository, Metrics(), idle_poll_seconds=3600)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        await asyncio.wait_for(worker.idle.wait(), timeout=15)
        ticket = ticket_with("1", "P1", "A", "1.00", received_at=datetime.now(timezone.utc))
        await repository.store_tickets(tickets=[ticket])

        async def processed() -> bool:
            return (await repository.ticket(ticket_id=ticket.id)).status == "processed"

        await wait_until(processed, timeout=15, what="the NOTIFY to wake the worker")
    finally:
        stop.set()
        await running



async def _done(task: asyncio.Task) -> bool:
    return task.done()


@pytest.mark.parametrize("limit", ["1_0", "\u0665", " 5x", "1e2"])
async def test_a_page_size_in_anything_but_ascii_digits_is_400(quiet_app, limit):
    response = await quiet_app.get("/products", params={"limit": limit})
    assert response.status == 400
    ticket = await quiet_app.get(f"/tickets/{uuid.uuid4()}", params={"lines_limit": limit})
    assert ticket.status == 400
