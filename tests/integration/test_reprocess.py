"""`myticket reprocess`: which tickets it puts back to pending, and --dry-run, --id."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import datetime, time, timedelta, timezone

from myticket.telemetry.metrics import Metrics
from myticket.core.domain import IncomingTicket
from myticket.web.typedefs import REPOSITORY
from myticket.worker.loop import TicketWorker

from ..helpers import ticket_with
from ..paths import PROJECT_ROOT, REFERENCE_TICKET

MALFORMED = b"this is not a ticket"


def reprocess(database_url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "myticket", "reprocess", *args],
        cwd=PROJECT_ROOT, env={**os.environ, "DATABASE_URL": database_url, "LOG_LEVEL": "WARNING"},
        capture_output=True, text=True, timeout=60,
    )


async def stored_and_processed(repository, *bodies: bytes) -> list[str]:
    now = datetime.now(timezone.utc)
    tickets = [IncomingTicket(str(uuid.uuid4()), now, "text/plain", body) for body in bodies]
    await repository.store_tickets(tickets=tickets)
    await TicketWorker(repository, Metrics()).drain()
    return [ticket.id for ticket in tickets]


async def statuses(repository, ids: list[str]) -> list[str]:
    return [await repository.ticket_status(ticket_id=ticket_id) for ticket_id in ids]


async def test_dry_run_lists_what_would_be_requeued_and_changes_nothing(quiet_app, database_url):
    repository = quiet_app.server.app[REPOSITORY]
    rejected, processed = await stored_and_processed(repository, MALFORMED, REFERENCE_TICKET)

    result = reprocess(database_url, "--dry-run")

    assert result.returncode == 0, result.stderr
    *listed, summary = result.stdout.strip().splitlines()
    assert [line.split("\t")[:2] for line in listed] == [[rejected, "rejected"]]
    assert summary == "dry run: 1 rejected tickets would be put back to pending"
    assert await statuses(repository, [rejected, processed]) == ["rejected", "processed"]


async def test_id_requeues_that_ticket_only(quiet_app, database_url):
    repository = quiet_app.server.app[REPOSITORY]
    chosen, other = await stored_and_processed(repository, MALFORMED, MALFORMED + b"!")
    same_body = ticket_with("1", "P1", "A", "1.00", received_at=datetime.now(timezone.utc)).body
    [original] = await stored_and_processed(repository, same_body)
    [duplicate] = await stored_and_processed(repository, same_body)
    assert await statuses(repository, [original, duplicate]) == ["processed", "duplicate"]

    result = reprocess(database_url, "--id", chosen)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1 rejected or duplicate tickets put back to pending"
    assert await statuses(repository, [chosen, other]) == ["pending", "rejected"]

    # Without --status, --id takes a duplicate as well as a rejected ticket.
    assert reprocess(database_url, "--id", duplicate).returncode == 0
    assert await statuses(repository, [duplicate]) == ["pending"]


async def test_id_that_cannot_be_requeued_says_why_and_fails(quiet_app, database_url):
    repository = quiet_app.server.app[REPOSITORY]
    [processed] = await stored_and_processed(repository, REFERENCE_TICKET)

    refused = reprocess(database_url, "--id", processed)
    assert refused.returncode == 1 and refused.stdout == ""  # the reason alone, not "0 … put back" first
    assert f"ticket {processed} not requeued: it is processed, not rejected or duplicate" in refused.stderr
    assert await statuses(repository, [processed]) == ["processed"]

    unknown = str(uuid.uuid4())
    missing = reprocess(database_url, "--id", unknown)
    assert missing.returncode == 1 and f"ticket {unknown} not requeued: no such ticket" in missing.stderr

    malformed = reprocess(database_url, "--id", "not-a-uuid")
    assert malformed.returncode == 2 and "is not a ticket id" in malformed.stderr


async def test_until_takes_the_days_before_it_only(quiet_app, database_url):
    repository = quiet_app.server.app[REPOSITORY]
    now = datetime.now(timezone.utc)
    day = (now - timedelta(days=2)).date()
    tickets = [
        IncomingTicket(str(uuid.uuid4()), datetime.combine(on, time(12), tzinfo=timezone.utc), "text/plain", body)
        for on, body in ((day, MALFORMED), (day + timedelta(days=1), MALFORMED + b"!"))
    ]
    await repository.store_tickets(tickets=tickets)
    await TicketWorker(repository, Metrics()).drain()

    result = reprocess(database_url, "--since", day.isoformat(), "--until", (day + timedelta(days=1)).isoformat())

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1 rejected tickets put back to pending"
    assert await statuses(repository, [ticket.id for ticket in tickets]) == ["pending", "rejected"]
    backwards = reprocess(database_url, "--since", "2026-02-02", "--until", "2026-02-01")
    assert backwards.returncode == 1 and "must be before --until" in backwards.stderr
