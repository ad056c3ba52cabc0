"""Guarantees a single-line change could break silently, each pinned without a
database: the spool's fsync, the constant-time signature comparison, and the bound
on tickets waiting for a commit."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import pytest

from myticket.core.domain import IncomingTicket
from myticket.db.resources import SPOOL_SQL_DIRECTORY, load_queries
from myticket.intake.group_commit import GroupCommitIngest, Overloaded
from myticket.intake.spool import Spool
from myticket.intake.spool_file import SpoolFile

from ..waiting import wait_until

SQLITE_SYNCHRONOUS_FULL = 2


def a_ticket(number: int) -> IncomingTicket:
    return IncomingTicket(f"id-{number}", datetime.now(timezone.utc), None, b"Order: %d\n" % number)


async def test_the_spool_commits_with_synchronous_full(tmp_path):
    """A 202 from the spool means fsynced: NORMAL would lose the last commits on a power cut."""
    spool = Spool(tmp_path, max_bytes=10**9)
    await spool.write([a_ticket(1)])
    await spool.close()
    spool_file = SpoolFile(tmp_path, load_queries(SPOOL_SQL_DIRECTORY))  # every spool call connects through it
    try:
        synchronous = spool_file.connection().execute("PRAGMA synchronous").fetchone()[0]
        journal = spool_file.connection().execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        spool_file.close()
    assert synchronous == SQLITE_SYNCHRONOUS_FULL
    assert journal == "wal"


async def test_past_its_bound_submit_refuses_at_once_instead_of_queueing():
    gate = asyncio.Event()
    stored: list[str] = []

    async def gated_store(tickets):
        await gate.wait()
        stored.extend(ticket.id for ticket in tickets)

    ingest = GroupCommitIngest(gated_store, batch_max_size=10, max_waiting=2)
    waiting = [asyncio.create_task(ingest.submit(a_ticket(n))) for n in (1, 2)]
    third = asyncio.create_task(ingest.submit(a_ticket(3)))
    try:
        async def third_answered() -> bool:
            return third.done()

        await wait_until(third_answered, timeout=5, what="the ticket past the bound to be refused")
        assert isinstance(third.exception(), Overloaded)
        assert ingest.waiting == 2
    finally:
        gate.set()
        await asyncio.gather(*waiting, return_exceptions=True)
        if not third.done():
            await third
    assert stored == ["id-1", "id-2"]
    await ingest.close()
