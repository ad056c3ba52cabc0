"""Large tickets: batches are bounded in bytes, and a batch that runs past the database's
timeout is split, not taken for an outage."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import resource
import uuid
from datetime import datetime, timezone
from pathlib import Path

import psycopg2
import pytest

from myticket.web.app import init_app
from myticket.config import DEFAULT_BATCH_MAX_BYTES
from myticket.core.database_errors import DatabaseConflict, DatabaseUnavailable, StatementCancelled, StatementTimeout
from myticket.core.domain import IncomingTicket
from myticket.db.errors import database_error
from myticket.db.repository import Repository
from myticket.intake.spool import Spool
from myticket.web.typedefs import INGEST, REPOSITORY

from ..database import SUPPORT_QUERIES
from ..helpers import confirmed_store
from ..paths import REFERENCE_TICKET
from ..waiting import wait_until

MIB = 1024 * 1024


def resident_mib() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / MIB


def one_mib_ticket(number: int) -> bytes:
    padding = b"#" * (MIB - len(REFERENCE_TICKET) - 8)
    return REFERENCE_TICKET.replace(b"123456", b"%06d" % number) + padding


async def test_a_burst_of_one_megabyte_tickets_is_stored_in_batches_under_the_byte_bound(aiohttp_client, settings, db):
    client = await aiohttp_client(await init_app(dataclasses.replace(settings, run_worker=False)))
    ingest, repository = client.server.app[INGEST], client.server.app[REPOSITORY]
    batch_bytes: list[int] = []
    gate = asyncio.Event()
    store = repository.store_tickets

    async def measured_store(*, tickets):
        batch_bytes.append(sum(len(ticket.body) for ticket in tickets))
        await gate.wait()
        return await store(tickets=tickets)

    repository.store_tickets = measured_store
    bodies = [one_mib_ticket(n) for n in range(48)]
    rss_before = resident_mib()
    posts = asyncio.gather(*(client.post("/ticket", data=body) for body in bodies))

    # Hold the first commit until the whole burst waits, so the next batches are cut
    # by the byte bound and not by the arrival times.
    async def burst_waiting() -> bool:
        return ingest.waiting == len(bodies)

    await wait_until(burst_waiting, timeout=60, what="the whole burst to wait for a commit")
    gate.set()
    responses = await posts

    assert [response.status for response in responses] == [202] * len(bodies)
    assert max(batch_bytes) <= DEFAULT_BATCH_MAX_BYTES
    assert sum(batch_bytes) == sum(len(body) for body in bodies)
    # One sender: each batch is one round of the fair queue, one quantum of its bytes
    # (MYTICKET_MAX_BODY_BYTES), so each of these tickets (8 bytes under 1 MiB) is a batch
    # of its own, quick to commit, whatever the byte bound would allow.
    assert [size // len(bodies[0]) for size in batch_bytes] == [1] * len(bodies)
    ids = [(await response.json())["id"] for response in responses]
    assert sorted(size for (size,) in db.rows("ticket_body_sizes")) == sorted(len(body) for body in bodies)
    for ticket_id, body in list(zip(ids, bodies))[::11]:
        assert bytes(db.rows("ticket_delivery", {"id": ticket_id})[0][1]) == body
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\n48 x 1 MiB: batches of {[round(size / MIB, 1) for size in batch_bytes]} MiB; test process RSS "
          f"{rss_before:.0f} MiB before the burst, {resident_mib():.0f} MiB after, peak {peak:.0f} MiB")


def tickets(count: int) -> list[IncomingTicket]:
    now = datetime.now(timezone.utc)
    return [IncomingTicket(str(uuid.uuid4()), now, "text/plain", REFERENCE_TICKET) for _ in range(count)]


@pytest.fixture
async def timing_out_store(database_url, db, tmp_path):
    """A DurableStore whose PostgreSQL sessions cancel any statement after one second."""
    repository = await Repository.connect(database_url + "?options=-c%20statement_timeout%3D1000")
    spool = Spool(tmp_path / "spool", max_bytes=100 * MIB)
    yield await confirmed_store(repository, spool, database_url), repository, spool
    await spool.close()
    await repository.close()


async def test_a_batch_that_runs_past_the_statement_timeout_is_halved_and_stored_not_spooled(
    timing_out_store, database_url, db
):
    store, repository, spool = timing_out_store
    batch = tickets(8)
    # Another session inserts the last ticket's id and keeps its transaction open: the
    # batch's INSERT waits on it until the server cancels the statement (SQLSTATE 57014).
    blocker = psycopg2.connect(database_url)
    with blocker.cursor() as cursor:
        cursor.execute(SUPPORT_QUERIES["insert_ticket_row"], {"id": batch[-1].id, "received_at": batch[-1].received_at})
    batch_sizes: list[int] = []
    insert = repository.store_tickets

    async def insert_then_unblock(*, tickets):
        batch_sizes.append(len(tickets))
        try:
            return await insert(tickets=tickets)
        finally:
            blocker.rollback()  # after the first attempt, nothing holds the id any more

    repository.store_tickets = insert_then_unblock
    try:
        await store(batch)
    finally:
        blocker.close()

    assert batch_sizes == [8, 4, 4]
    assert await spool.count() == 0
    assert not store.spooling
    assert sorted(row[0] for row in db.rows("stored_ids")) == sorted(ticket.id for ticket in batch)


class QueryCanceled(psycopg2.OperationalError):
    pgcode = "57014"


def raised_while_handling(context: BaseException, error: BaseException) -> BaseException:
    """`error` as raised while handling `context` (a rollback failing after a timeout)."""
    try:
        try:
            raise context
        except BaseException:
            raise error
    except BaseException as raised:
        return raised


def test_a_statement_timeout_is_told_from_other_failures():
    for timeout in (TimeoutError(), asyncio.TimeoutError()):
        mapped = database_error("insert_tickets", timeout)
        assert type(mapped) is StatementTimeout  # not a conflict: the database may be gone
        assert str(mapped) == "insert_tickets: TimeoutError"
    cancelled = database_error("insert_tickets", QueryCanceled("canceling statement due to statement timeout"))
    assert isinstance(cancelled, StatementCancelled) and isinstance(cancelled, DatabaseConflict)
    assert str(cancelled) == "insert_tickets: 57014 query_canceled: canceling statement due to statement timeout"
    lost_after_timeout = raised_while_handling(TimeoutError(), psycopg2.InterfaceError("connection already closed"))
    assert type(database_error("insert_tickets", lost_after_timeout)) is StatementTimeout
    refused = database_error("insert_tickets", psycopg2.OperationalError("connection refused"))
    assert type(refused) is DatabaseUnavailable
    assert str(refused) == "insert_tickets: connection refused"


async def test_a_timed_out_batch_whose_first_half_times_out_too_is_spooled_after_two_timeouts(
    timing_out_store, database_url, db
):
    store, repository, spool = timing_out_store
    batch = tickets(8)
    blocker = psycopg2.connect(database_url)
    with blocker.cursor() as cursor:
        cursor.execute(SUPPORT_QUERIES["insert_ticket_row"], {"id": batch[0].id, "received_at": batch[0].received_at})
    batch_sizes: list[int] = []
    insert = repository.store_tickets

    async def counted_insert(*, tickets):
        batch_sizes.append(len(tickets))
        return await insert(tickets=tickets)

    repository.store_tickets = counted_insert
    try:
        await store(batch)
    finally:
        blocker.rollback()
        blocker.close()

    # Halving did not help: the database is taken for unavailable, not searched further.
    assert batch_sizes == [8, 4]
    assert store.spooling
    assert await spool.count() == 8
    assert await store.replay() == 8
    assert sorted(row[0] for row in db.rows("stored_ids")) == sorted(ticket.id for ticket in batch)


@contextlib.contextmanager
def delivery_held_by_another_session(database_url: str, ticket: IncomingTicket):
    """Another session's open transaction holding `ticket`'s delivery: an INSERT of the
    same delivery waits until the block ends."""
    blocker = psycopg2.connect(database_url)
    try:
        with blocker.cursor() as cursor:
            cursor.execute(SUPPORT_QUERIES["insert_ticket_row"], {"id": ticket.id, "received_at": ticket.received_at})
        yield
    finally:
        blocker.rollback()
        blocker.close()


async def test_a_statement_the_server_cancels_is_a_statement_cancelled_conflict(database_url, db):
    repository = await Repository.connect(database_url + "?options=-c%20statement_timeout%3D200")
    [ticket] = tickets(1)
    try:
        with delivery_held_by_another_session(database_url, ticket):
            with pytest.raises(StatementCancelled) as raised:
                await repository.store_tickets(tickets=[ticket])
        # aiopg raised a CancelledError for the server's 57014; nothing of it is left.
        assert str(raised.value) == "insert_tickets: statement cancelled by the server (57014)"
        assert isinstance(raised.value, StatementTimeout) and isinstance(raised.value, DatabaseConflict)
        assert raised.value.__cause__.pgcode == "57014"
        assert raised.value.reason == "timeout"
        assert await repository.store_tickets(tickets=[ticket]) == 1  # and the pool works on
    finally:
        await repository.close()


async def test_a_statement_past_the_client_timeout_is_a_statement_timeout_but_no_conflict(database_url, db):
    repository = await Repository.connect(database_url, statement_seconds=1)
    [ticket] = tickets(1)
    try:
        with delivery_held_by_another_session(database_url, ticket):
            with pytest.raises(StatementTimeout) as raised:
                await repository.store_tickets(tickets=[ticket])
        # The client gave up: the database may be gone, so the worker pauses on it.
        assert not isinstance(raised.value, DatabaseConflict)
        assert isinstance(raised.value.__cause__, TimeoutError)
        assert str(raised.value) == "insert_tickets: TimeoutError"
    finally:
        await repository.close()


async def test_a_task_cancelled_while_its_statement_waits_is_cancelled_not_a_database_error(database_url, db):
    repository = await Repository.connect(database_url)
    [ticket] = tickets(1)
    try:
        with delivery_held_by_another_session(database_url, ticket):
            storing = asyncio.create_task(repository.store_tickets(tickets=[ticket]))

            async def insert_waiting() -> bool:
                return db.value("sessions_waiting_for_a_transaction") == 1

            await wait_until(insert_waiting, timeout=10, what="the INSERT to wait for the other session")
            storing.cancel()
            with pytest.raises(asyncio.CancelledError):
                await storing
    finally:
        await repository.close()
