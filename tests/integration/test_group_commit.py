"""Group commit: correctness of batching, never speed."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import datetime, timezone

import pytest

from myticket.web.app import init_app
from myticket.intake.group_commit import GroupCommitIngest
from myticket.core.domain import IncomingTicket
from myticket.web.typedefs import INGEST, REPOSITORY

from ..helpers import gate_database_writes
from ..paths import REFERENCE_TICKET
from ..waiting import wait_until


async def test_concurrent_posts_are_all_acknowledged_and_stored_once(client, db):
    bodies = [REFERENCE_TICKET.replace(b"123456", str(n).encode()) for n in range(300)]

    responses = await asyncio.gather(*(client.post("/ticket", data=body) for body in bodies))

    assert [response.status for response in responses] == [202] * 300
    ids = [(await response.json())["id"] for response in responses]
    assert len(set(ids)) == 300
    assert sorted(row[0] for row in db.rows("stored_ids")) == sorted(ids)
    for ticket_id, body in list(zip(ids, bodies))[::37]:
        assert bytes(db.rows("ticket_delivery", {"id": ticket_id})[0][1]) == body


async def test_a_batch_refused_for_one_ticket_fails_only_that_ticket_and_stores_the_others(quiet_app, db):
    repository = quiet_app.server.app[REPOSITORY]
    ingest = GroupCommitIngest(
        lambda tickets: repository.store_tickets(tickets=tickets), batch_max_size=100, max_waiting=100,
        max_flushes_in_flight=1,
    )
    now = datetime.now(timezone.utc)
    tickets = [IncomingTicket(str(uuid.uuid4()), now, None, REFERENCE_TICKET) for _ in range(6)]
    # An id PostgreSQL refuses makes its batch's INSERT fail: the first ticket leaves alone
    # (nothing in flight), the five others wait and leave together as the second batch,
    # which is then split until the refused ticket is alone.
    tickets[3] = dataclasses.replace(tickets[3], id="not-a-uuid")

    results = await asyncio.gather(*(ingest.submit(ticket) for ticket in tickets), return_exceptions=True)

    assert [result is None for result in results] == [True, True, True, False, True, True]
    assert sorted(db.rows("stored_ids")) == sorted((ticket.id,) for ticket in tickets if ticket.id != "not-a-uuid")


@pytest.fixture
async def gated_app(aiohttp_client, settings, db):
    """An app whose database writes wait for `gate`, with room for two waiting tickets."""
    client = await aiohttp_client(
        await init_app(dataclasses.replace(settings, run_worker=False, max_waiting_tickets=2, sender_share_percent=100))
    )
    repository = client.server.app[REPOSITORY]
    gate = gate_database_writes(repository)
    return client, gate


async def test_backpressure_answers_503_when_too_many_tickets_wait(gated_app, db):
    client, gate = gated_app
    ingest = client.server.app[INGEST]
    first = asyncio.create_task(client.post("/ticket", data=REFERENCE_TICKET))
    second = asyncio.create_task(client.post("/ticket", data=REFERENCE_TICKET))

    async def two_waiting() -> bool:
        return ingest.waiting == 2

    await wait_until(two_waiting, timeout=10, what="two tickets waiting for the database")
    refused = await client.post("/ticket", data=REFERENCE_TICKET)
    assert refused.status == 503
    assert refused.headers["Retry-After"] == "1"
    assert "too many tickets" in (await refused.json())["error"]

    gate.set()
    assert [(await first).status, (await second).status] == [202, 202]
    assert db.value("count_tickets") == 2


async def test_client_that_disconnects_after_sending_still_gets_its_ticket_committed(gated_app, db):
    client, gate = gated_app
    ingest = client.server.app[INGEST]
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(
        b"POST /ticket HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n" % len(REFERENCE_TICKET) + REFERENCE_TICKET
    )
    await writer.drain()

    async def admitted() -> bool:
        return ingest.waiting == 1

    await wait_until(admitted, timeout=10, what="the ticket to be admitted")
    writer.close()
    await writer.wait_closed()
    gate.set()

    async def committed() -> bool:
        return db.value("count_tickets") == 1 and ingest.waiting == 0

    await wait_until(committed, timeout=10, what="the abandoned ticket to be committed")
    assert bytes(db.rows("ticket_delivery", {"id": db.rows("stored_ids")[0][0]})[0][1]) == REFERENCE_TICKET



@pytest.mark.parametrize("flushes_in_flight", [1, 3])
async def test_no_more_batches_are_committed_at_once_than_flushes_in_flight(quiet_app, db, flushes_in_flight):
    repository = quiet_app.server.app[REPOSITORY]
    gate = asyncio.Event()
    in_flight: list[int] = []
    most_in_flight = 0
    batch_sizes: list[int] = []

    async def gated_store(tickets):
        nonlocal most_in_flight
        in_flight.append(len(tickets))
        most_in_flight = max(most_in_flight, len(in_flight))
        batch_sizes.append(len(tickets))
        await gate.wait()
        await repository.store_tickets(tickets=tickets)
        in_flight.pop()

    ingest = GroupCommitIngest(gated_store, batch_max_size=4, max_waiting=100, max_flushes_in_flight=flushes_in_flight)
    now = datetime.now(timezone.utc)
    tickets = [IncomingTicket(str(uuid.uuid4()), now, None, REFERENCE_TICKET) for _ in range(20)]
    submitted = asyncio.gather(*(ingest.submit(ticket) for ticket in tickets))

    async def flushes_started() -> bool:
        return len(in_flight) == flushes_in_flight

    await wait_until(flushes_started, timeout=10, what=f"{flushes_in_flight} flushes to start")
    gate.set()
    await submitted

    assert most_in_flight == flushes_in_flight
    # Each of the first flushes left at once with one ticket; the rest gathered meanwhile.
    assert batch_sizes[:flushes_in_flight] == [1] * flushes_in_flight
    assert max(batch_sizes) == 4 and sum(batch_sizes) == 20
    assert sorted(row[0] for row in db.rows("stored_ids")) == sorted(ticket.id for ticket in tickets)
