"""The app honours MYTICKET_MAX_WAITING_TICKETS: past it a POST is answered 503 at once.
Failing by assertion within seconds (a larger bound would leave the third request
waiting on the gated database), and opening the gate whatever happens. A ticket refused
with 503, past the bound or while shutting down, gives its body's bytes back at once."""

from __future__ import annotations

import asyncio
import dataclasses

from myticket.web.app import init_app
from myticket.web.typedefs import BODY_BUDGET, INGEST, REPOSITORY

from ..helpers import gate_database_writes
from ..paths import REFERENCE_TICKET
from ..waiting import wait_until


async def test_the_ticket_past_the_configured_bound_is_refused_without_waiting(aiohttp_client, settings, db):
    client = await aiohttp_client(await init_app(
        dataclasses.replace(settings, run_worker=False, max_waiting_tickets=2, sender_share_percent=100)
    ))
    repository = client.server.app[REPOSITORY]
    gate = gate_database_writes(repository)
    ingest = client.server.app[INGEST]
    budget = client.server.app[BODY_BUDGET]
    admitted = [asyncio.create_task(client.post("/ticket", data=REFERENCE_TICKET)) for _ in range(2)]
    past_the_bound = None
    try:
        async def two_waiting() -> bool:
            return ingest.waiting == 2

        await wait_until(two_waiting, timeout=10, what="two tickets waiting for the database")
        past_the_bound = asyncio.create_task(client.post("/ticket", data=REFERENCE_TICKET))

        async def answered() -> bool:
            return past_the_bound.done()

        await wait_until(answered, timeout=5, what="the ticket past the bound to be answered while the others wait")
        refused = past_the_bound.result()
        assert refused.status == 503
        assert await refused.json() == {"error": "too many tickets waiting for storage"}
        assert ingest.waiting == 2
        # The refused body's bytes are given back; the two waiting still hold theirs.
        assert budget.reserved == 2 * len(REFERENCE_TICKET)
    finally:
        gate.set()
        statuses = [(await request).status for request in admitted]
        if past_the_bound is not None:
            await past_the_bound
    assert statuses == [202, 202]
    assert budget.reserved == 0
    assert db.value("count_tickets") == 2


async def test_a_ticket_refused_while_shutting_down_gives_its_bytes_back(aiohttp_client, settings, db):
    client = await aiohttp_client(await init_app(dataclasses.replace(settings, run_worker=False)))
    app = client.server.app
    await app[INGEST].close()  # what the shutdown does first: refuse new tickets

    response = await client.post("/ticket", data=REFERENCE_TICKET)

    assert response.status == 503
    assert response.headers["Retry-After"] == "1"
    assert await response.json() == {"error": "service is shutting down"}
    assert app[BODY_BUDGET].reserved == 0
    assert db.value("count_tickets") == 0
