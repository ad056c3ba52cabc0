"""The raw rows are never updated: after ingest, spool replays, processing, duplicates,
failed attempts and `myticket reprocess`, no row of any `deliveries` partition has been
updated or deleted, by PostgreSQL's own counters (pg_stat_user_tables)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone

from myticket.core.domain import IncomingTicket
from myticket.core.ids import new_delivery_id
from myticket.telemetry.metrics import Metrics
from myticket.db.migrate import apply_migrations
from myticket.core.parser import parse_ticket
from myticket.db.repository import Repository
from myticket.worker.loop import TicketWorker

from ..database import Db, create_empty_database
from ..helpers import ticket_with
from ..paths import PROJECT_ROOT, REFERENCE_TICKET
from ..waiting import wait_until

FLAKY = b"Order: flaky\nTotal: 1.00\n\nproduct,product_id,price\nPear,F1,1.00\n"
MALFORMED = b"not a ticket"
# Statistics reach the shared counters when a backend is idle past its flush interval,
# or at its exit; every writing session here has exited, so they arrive within moments.
STATISTICS_FLUSH_TIMEOUT_SECONDS = 30


def failing_until_reprocessed(body: bytes):
    """The parser, except that FLAKY fails as a bug would (not a parse error)."""
    if body == FLAKY:
        raise RuntimeError("a bug met by this body")
    return parse_ticket(body)


def delivery(body: bytes, received_at: datetime) -> IncomingTicket:
    ticket_id, at = new_delivery_id(received_at)
    return IncomingTicket(ticket_id, at, "text/plain", body)


async def test_no_raw_row_is_ever_updated_or_deleted(pg_server_url):
    url = create_empty_database(pg_server_url, "write_once_counters")
    apply_migrations(url)
    now = datetime.now(timezone.utc)
    days = [now - timedelta(days=3), now - timedelta(days=1), now]
    distinct = [ticket_with(str(n), f"P{n}", "Item", "1.00", received_at=day).body for n, day in enumerate(days)]
    tickets = [delivery(body, day) for body, day in zip(distinct, days)] + [
        delivery(REFERENCE_TICKET, days[0]),
        delivery(REFERENCE_TICKET, days[1]),  # the same bytes again: a duplicate
        delivery(MALFORMED, days[2]),
        delivery(FLAKY, days[2]),
    ]

    repository = await Repository.connect(url)
    try:
        assert await repository.store_tickets(tickets=tickets) == len(tickets)
        assert await repository.store_tickets(tickets=tickets[:3]) == 0  # a spool replay stores nothing again
        await TicketWorker(repository, Metrics(), max_attempts=3, parse=failing_until_reprocessed).drain()
        assert await repository.ticket_status(ticket_id=tickets[4].id) == "duplicate"
        assert await repository.ticket_status(ticket_id=tickets[6].id) == "rejected"  # after 3 failed attempts

        reprocess = subprocess.run(
            [sys.executable, "-m", "myticket", "reprocess"], cwd=PROJECT_ROOT,
            env={**os.environ, "DATABASE_URL": url, "LOG_LEVEL": "WARNING"}, capture_output=True, text=True,
            timeout=60,
        )
        assert reprocess.stdout.strip() == "2 rejected tickets put back to pending", reprocess.stderr
        await TicketWorker(repository, Metrics()).drain()
        assert await repository.ticket_status(ticket_id=tickets[6].id) == "processed"
    finally:
        await repository.close()  # its backends exit, which flushes their statistics

    db = Db(url)
    try:
        counters: dict[str, tuple] = {}

        async def every_write_counted() -> bool:
            counters.clear()
            counters.update((row[0], row[1:]) for row in db.rows("write_counters"))
            # (inserted, updated, deleted): the ingest, the worker's attempts and
            # outcomes, and reprocess's deletes, each from another session.
            return (
                counters.get("deliveries", (0,))[0] == len(tickets)
                and counters.get("pending_tickets", (0, 0))[1] == 2
                and counters.get("ticket_outcomes", (0, 0, 0)) == (len(tickets) + 2, 0, 2)
            )

        await wait_until(every_write_counted, timeout=STATISTICS_FLUSH_TIMEOUT_SECONDS,
                         what="the statistics of every writing session")
        raw = db.rows("raw_partition_counters")
        assert [name for name, inserted, *_ in raw if inserted] == sorted(
            f"deliveries_{day:%Y%m%d}" for day in days
        )
        assert [(name, updated, hot_updated, deleted) for name, _inserted, updated, hot_updated, deleted in raw] == [
            (name, 0, 0, 0) for name, *_ in raw
        ]
    finally:
        db.close()
