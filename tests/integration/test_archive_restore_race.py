"""Two restores of the same file at once, from two processes' worth of connections:
each ticket is stored once, and the two reports share the file's tickets between them.
One restore at a time never reaches the statement's conflict handling (a ticket stored
before is skipped by its NOT EXISTS), so the two are made to race: both wait behind a
lock, and both statements take their snapshots when it goes, seeing neither's rows."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta, timezone

import psycopg2
import pytest

from myticket.archive.commands import archive_before, restore_paths
from myticket.archive.format import day_file_name
from myticket.db.repository import Repository
from myticket.telemetry.metrics import Metrics
from myticket.worker.loop import TicketWorker

from ..database import SUPPORT_QUERIES
from ..helpers import ticket_with
from ..waiting import wait_until

DAY = date(2023, 7, 8)
TICKETS = 3000
UTC = timezone.utc


@pytest.fixture
async def repositories(database_url, db):
    """Two repositories, each with its pool, as two `myticket restore` would have."""
    first, second = await Repository.connect(database_url), await Repository.connect(database_url)
    yield first, second
    await first.close()
    await second.close()


@pytest.fixture
def lock_holder(database_url: str) -> Iterator[psycopg2.extensions.connection]:
    """Another session, whose transaction holds its locks until rolled back."""
    conn = psycopg2.connect(database_url)
    yield conn
    conn.rollback()
    conn.close()


async def archived_day_of_tickets(repository: Repository, directory) -> None:
    """TICKETS processed tickets of DAY, each with its own body, archived to `directory`."""
    start = datetime.combine(DAY, time(), tzinfo=UTC)
    await repository.store_tickets(tickets=[
        ticket_with(str(n), f"P{n % 50}", f"Thing {n % 50}", f"{n % 9}.25", received_at=start + timedelta(seconds=n))
        for n in range(TICKETS)
    ])
    await TicketWorker(repository, Metrics()).drain()
    [archived] = [entry for entry in await archive_before(repository, before=DAY + timedelta(days=1),
                                                          directory=directory) if entry.day == DAY]
    assert archived.tickets == TICKETS


async def test_two_restores_of_one_file_at_once_store_each_ticket_once(repositories, db, lock_holder, tmp_path):
    first, second = repositories
    directory = tmp_path / "archive"
    await archived_day_of_tickets(first, directory)
    db.rows("reset_tables")  # the day is gone; its (empty) partitions stay
    assert db.value("count_tickets") == 0
    with lock_holder.cursor() as cursor:
        cursor.execute(SUPPORT_QUERIES["lock_ticket_lines"])

    path = directory / day_file_name(DAY)
    restores = asyncio.gather(restore_paths(first, [path]), restore_paths(second, [path]), return_exceptions=True)

    async def both_waiting() -> bool:
        return db.value("lock_requests_waiting_on_ticket_lines") >= 2

    try:
        await wait_until(both_waiting, timeout=60, what="both restores to wait for ticket_lines")
    finally:
        lock_holder.rollback()  # both statements start now, neither seeing the other's rows
    reports = await restores

    failures = [report for report in reports if isinstance(report, BaseException)]
    assert not failures, f"a restore failed: {failures!r}"
    assert [report.tickets_read for report in reports] == [TICKETS, TICKETS]
    assert sum(report.stored for report in reports) == TICKETS
    assert sum(report.already_present for report in reports) == TICKETS
    times_stored = collections.Counter(ticket_id for (ticket_id,) in db.rows("stored_ids"))
    assert len(times_stored) == TICKETS and set(times_stored.values()) == {1}
    assert db.value("count_lines") == TICKETS
    assert db.rows("status_counts") == [("processed", TICKETS)]
