"""Migration 0004 on a database filled by the previous release: every ticket keeps its
id, exact bytes, reception time, status, attempts, parse results and lines, the
catalogue is unchanged, and the service goes on. Its rollback gives the same data back
in the previous tables, and every migration rolls back with data present."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal

from yoyo import get_backend, read_migrations

from myticket.config import Settings
from myticket.db.migrate import apply_migrations, migration_ids
from myticket.core.parser import parse_ticket
from myticket.db.resources import migrations_directory
from myticket.web.app import init_app

from ..database import Db, create_empty_database
from ..helpers import post, settled
from ..paths import CP1252_TICKET

PREVIOUS_RELEASE = ("0001_tickets", "0002_processing", "0003_no_row_by_row_foreign_keys")
WRITE_ONCE = "0004_write_once_day_partitions"
OPERATOR = "0005_operator_indexes_and_idempotency_keys"
# Lines in the claim budget, the journal of claims: on top of OPERATOR, rolled back first.
CLAIM_JOURNAL = "0006_claim_lines_and_journal"
# Digests in one table keyed by (body, day), no longer partitioned: on top of CLAIM_JOURNAL.
DIGESTS = "0007_digests_by_body"
# GET /tickets walking a wide window by day: functions only, rolled back first.
PAGE_WALK = "0008_ticket_pages_by_day_walk"
PARENTS = ("deliveries", "ticket_outcomes", "ticket_lines")


@contextlib.contextmanager
def yoyo_migrations(url: str):
    backend = get_backend(url)
    try:
        yield backend, read_migrations(str(migrations_directory()))
    finally:
        backend.connection.close()


def apply_only(url: str, ids: tuple[str, ...]) -> None:
    with yoyo_migrations(url) as (backend, migrations):
        with backend.lock():
            backend.apply_migrations(backend.to_apply(migrations.filter(lambda m: m.id in ids)))


def roll_back(url: str, migration_id: str) -> None:
    with yoyo_migrations(url) as (backend, migrations):
        with backend.lock():
            backend.rollback_migrations(backend.to_rollback(migrations.filter(lambda m: m.id == migration_id)))


def body(order: str, *lines: tuple[str, str, str]) -> bytes:
    products = "".join(f"{name},{product_id},{price}\n" for name, product_id, price in lines)
    return f"Order: {order}\nTotal: 9.99\n\nproduct,product_id,price\n{products}".encode()


@dataclasses.dataclass
class PreviousTicket:
    """A row of the previous `tickets` table, as the previous worker left it."""

    id: str
    received_at: datetime
    body: bytes
    status: str = "pending"
    content_type: str | None = "text/plain"
    attempts: int = 0
    error: str | None = None
    duplicate_of: str | None = None


def at(day: date, hour: int, minute: int = 0, second: int = 0, micro: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute, second, micro), tzinfo=timezone.utc)


def previous_release_tickets(today: date) -> dict[str, PreviousTicket]:
    """Tickets in every status, received over several days (one 400 days ago, two on the
    edges of a day), in the order the previous release inserted them: the last one was
    replayed from the spool, inserted after tickets received later than it."""
    milk_and_bread = body("1", ("Milk", "P1", "2.50"), ("Bread", "P2", "1.20"))
    tickets = [
        PreviousTicket("0a6c9d1e-4b1f-4f5e-9a51-4f3ad0c1e001", at(today - timedelta(400), 10, 0, 0, 123456),
                       milk_and_bread, status="processed"),
        PreviousTicket("0a6c9d1e-4b1f-4f5e-9a51-4f3ad0c1e002", at(today - timedelta(40), 23, 59, 59, 999999),
                       b"\xff\xfenot a ticket\r\n\x00", status="rejected", content_type="application/octet-stream",
                       attempts=3, error="line 1: NUL byte in the ticket"),
        PreviousTicket("0a6c9d1e-4b1f-4f5e-9a51-4f3ad0c1e003", at(today - timedelta(40), 12), CP1252_TICKET,
                       status="processed", content_type=None),
        PreviousTicket("0a6c9d1e-4b1f-4f5e-9a51-4f3ad0c1e004", at(today - timedelta(2), 8), milk_and_bread,
                       status="duplicate", duplicate_of="0a6c9d1e-4b1f-4f5e-9a51-4f3ad0c1e001"),
        PreviousTicket("0a6c9d1e-4b1f-4f5e-9a51-4f3ad0c1e005", at(today - timedelta(2), 9),
                       body("5", ("Milk", "P1", "2.60")), status="processed"),
        PreviousTicket("0a6c9d1e-4b1f-4f5e-9a51-4f3ad0c1e006", at(today - timedelta(1), 0),
                       body("6", ("Whole milk", "P1", "2.75"), ("Butter", "P3", "3.10")), attempts=2),
        PreviousTicket("0a6c9d1e-4b1f-4f5e-9a51-4f3ad0c1e007", at(today - timedelta(2), 7),
                       body("7", ("Jam", "P4", "4.00"))),
    ]
    return {ticket.id: ticket for ticket in tickets}


def fill_as_the_previous_release(db: Db, tickets: dict[str, PreviousTicket]) -> None:
    """Rows as the previous service wrote them: the ticket at reception, then its parse
    results, lines and digest (processed), its error (rejected) or the ticket it repeats
    (duplicate); and the catalogue, each product naming its latest ticket by seq."""
    for ticket in tickets.values():
        parsed = parse_ticket(ticket.body) if ticket.status == "processed" else None
        digest = hashlib.sha256(ticket.body).digest() if ticket.status in ("processed", "duplicate") else None
        db.rows("insert_previous_ticket", {
            "id": ticket.id, "received_at": ticket.received_at, "content_type": ticket.content_type,
            "body": ticket.body, "status": ticket.status,
            "order_ref": parsed and parsed.order_ref, "vat": parsed and parsed.vat, "total": parsed and parsed.total,
            "headers": json.dumps(parsed.headers) if parsed else None,
            "warnings": list(parsed.warnings) if parsed else [], "error": ticket.error,
            "text_encoding": parsed and parsed.encoding,
            "processed_at": None if ticket.status == "pending" else ticket.received_at + timedelta(seconds=1),
            "attempts": ticket.attempts, "body_sha256": digest, "duplicate_of": ticket.duplicate_of,
        })
        if parsed is not None:
            for line in parsed.lines:
                db.rows("insert_previous_line", {
                    "ticket_id": ticket.id, "line_number": line.line_number, "product_id": line.product_id,
                    "name": line.name, "price": line.price,
                })
            db.rows("insert_previous_processed_body", {"body_sha256": digest, "ticket_id": ticket.id})
    first, cafe, latest_milk = (tickets[f"0a6c9d1e-4b1f-4f5e-9a51-4f3ad0c1e00{n}"] for n in (1, 3, 5))
    for product_id, name, price, first_seen, last_seen, times_seen in (
        ("P1", "Milk", "2.60", first, latest_milk, 2),
        ("P2", "Bread", "1.20", first, first, 1),
        ("CC01", "Café crème", "3.00", cafe, cafe, 1),
    ):
        db.rows("insert_previous_product", {
            "product_id": product_id, "name": name, "price": Decimal(price), "first_seen_at": first_seen.received_at,
            "last_seen_at": last_seen.received_at, "last_ticket_id": last_seen.id, "times_seen": times_seen,
        })


def snapshot(db: Db, schema: str) -> dict[str, list[tuple]]:
    """Tickets (in seq order for the previous schema, reception order for the new one),
    lines, digests and catalogue, in the same columns for both schemas."""
    return {what: db.rows(f"{schema}_{what}") for what in ("tickets", "lines", "processed_bodies", "products")}


def missing_partitions(db: Db, days: set[date]) -> list[str]:
    existing = {partition for _parent, partition in db.rows("day_partition_names")}
    return sorted(f"{parent}_{day:%Y%m%d}" for parent in PARENTS for day in days
                  if f"{parent}_{day:%Y%m%d}" not in existing)


async def test_previous_release_data_migrates_the_service_goes_on_and_rolls_back(
    pg_server_url, aiohttp_client, tmp_path
):
    url = create_empty_database(pg_server_url, "migrate_with_data")
    apply_only(url, PREVIOUS_RELEASE)
    db = Db(url)
    try:
        today = datetime.now(timezone.utc).date()
        tickets = previous_release_tickets(today)
        fill_as_the_previous_release(db, tickets)
        before = snapshot(db, "previous")
        replayed = "0a6c9d1e-4b1f-4f5e-9a51-4f3ad0c1e007"
        assert before["tickets"][-1][0] == replayed  # inserted last, received before others

        assert apply_migrations(url) == [WRITE_ONCE, OPERATOR, CLAIM_JOURNAL, DIGESTS, PAGE_WALK]

        migrated = snapshot(db, "migrated")
        assert sorted(migrated["tickets"]) == sorted(before["tickets"])  # ids, bytes, times, status, results
        assert migrated["lines"] == before["lines"]
        assert migrated["processed_bodies"] == before["processed_bodies"]
        assert migrated["products"] == before["products"]  # last_ticket_id: the ticket of the old seq
        days = {ticket.received_at.date() for ticket in tickets.values()} | {today + timedelta(n) for n in range(3)}
        assert missing_partitions(db, days) == []

        # The service goes on: the pending tickets are processed, old ids answer, new tickets are stored.
        settings = Settings(database_url=url, data_dir=tmp_path, worker_placement="inline")
        client = await aiohttp_client(await init_app(settings))
        pending_with_attempts = await settled(client, "0a6c9d1e-4b1f-4f5e-9a51-4f3ad0c1e006")
        assert (pending_with_attempts["status"], pending_with_attempts["attempts"]) == ("processed", 2)
        assert (await settled(client, replayed))["status"] == "processed"
        oldest = await (await client.get("/tickets/0a6c9d1e-4b1f-4f5e-9a51-4f3ad0c1e001")).json()
        assert (oldest["status"], oldest["order_ref"], oldest["line_count"]) == ("processed", "1", 2)
        assert [line["product_id"] for line in oldest["lines"]] == ["P1", "P2"]
        duplicate = await (await client.get("/tickets/0a6c9d1e-4b1f-4f5e-9a51-4f3ad0c1e004")).json()
        assert duplicate["duplicate_of"] == "0a6c9d1e-4b1f-4f5e-9a51-4f3ad0c1e001"
        new_id = await post(client, body("8", ("Tea", "P5", "1.90")))
        assert (await settled(client, new_id))["status"] == "processed"
        # Latest received wins across the migration: the pending ticket of yesterday renames P1.
        milk = await (await client.get("/products/P1")).json()
        assert (milk["name"], Decimal(str(milk["price"])), milk["times_seen"]) == ("Whole milk", Decimal("2.75"), 3)
        await client.close()

        went_on = snapshot(db, "migrated")
        assert len(went_on["tickets"]) == len(tickets) + 1

        roll_back(url, PAGE_WALK)
        roll_back(url, DIGESTS)
        roll_back(url, CLAIM_JOURNAL)
        roll_back(url, OPERATOR)
        roll_back(url, WRITE_ONCE)
        rolled_back = snapshot(db, "previous")
        assert rolled_back == went_on  # and seq in reception order: the lists are in the same order
        assert db.rows("service_tables") == [("processed_bodies",), ("products",), ("ticket_lines",), ("tickets",)]

        assert apply_migrations(url) == [WRITE_ONCE, OPERATOR, CLAIM_JOURNAL, DIGESTS, PAGE_WALK]
        assert snapshot(db, "migrated") == went_on
        assert missing_partitions(db, days) == []
    finally:
        db.close()


def test_every_migration_rolls_back_with_data_present_and_applies_again(pg_server_url):
    url = create_empty_database(pg_server_url, "migrate_rollback_with_data")
    apply_only(url, PREVIOUS_RELEASE)
    db = Db(url)
    try:
        fill_as_the_previous_release(db, previous_release_tickets(datetime.now(timezone.utc).date()))
        before = snapshot(db, "previous")
        apply_migrations(url)

        roll_back(url, PAGE_WALK)
        roll_back(url, DIGESTS)
        digests_by_body = snapshot(db, "migrated")
        roll_back(url, CLAIM_JOURNAL)
        migrated = snapshot(db, "migrated")
        assert migrated == digests_by_body  # the digests are back in their days' partitions
        roll_back(url, OPERATOR)  # the indexes and the keys go; the tickets stay
        assert snapshot(db, "migrated") == migrated
        roll_back(url, WRITE_ONCE)
        assert snapshot(db, "previous")["tickets"] == sorted(before["tickets"], key=lambda row: (row[1], row[0]))
        roll_back(url, "0003_no_row_by_row_foreign_keys")  # the foreign keys hold on the data
        assert snapshot(db, "previous")["lines"] == before["lines"]
        roll_back(url, "0002_processing")  # parse results go with their columns; the bodies stay
        assert sorted(db.rows("previous_deliveries")) == sorted(row[:4] for row in before["tickets"])
        roll_back(url, "0001_tickets")
        assert db.rows("service_tables") == []

        assert sorted(apply_migrations(url)) == sorted(migration_ids())
        assert db.rows("service_tables") == [
            ("archived_days",), ("deliveries",), ("forgotten_digest_days",), ("idempotency_keys",), ("pending_tickets",),
            ("processed_bodies",),
            ("products",), ("ticket_lines",), ("ticket_outcomes",), ("worker_claims",),
        ]
    finally:
        db.close()
