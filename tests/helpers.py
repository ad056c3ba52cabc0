"""Helpers shared by the test modules."""

from __future__ import annotations

import asyncio
import functools
import uuid
from datetime import datetime

from myticket.core.domain import IncomingTicket
from myticket.telemetry.metrics import Metrics
from myticket.db.migrate import prepare_database
from myticket.intake.store import DurableStore

from .prometheus_text import sample  # noqa: F401 (re-exported for the tests that take it from here)
from .waiting import wait_until


async def settled(client, ticket_id: str) -> dict:
    """The ticket once the worker has processed it."""
    result: dict = {}

    async def done() -> bool:
        response = await client.get(f"/tickets/{ticket_id}")
        result.update(await response.json())
        return result["status"] != "pending"

    await wait_until(done, timeout=15, what=f"ticket {ticket_id} to be processed")
    return result


async def post(client, body: bytes) -> str:
    response = await client.post("/ticket", data=body)
    assert response.status == 202
    return (await response.json())["id"]


def ticket_with(order: str, product_id: str, name: str, price: str, *, received_at: datetime) -> IncomingTicket:
    body = f"Order: {order}\nTotal: {price}\n\nproduct,product_id,price\n{name},{product_id},{price}\n".encode()
    return IncomingTicket(str(uuid.uuid4()), received_at, "text/plain", body)


async def confirmed_store(repository, spool, database_url: str) -> DurableStore:
    """A DurableStore as the app builds it, with its database confirmed (migrations
    applied, the spool known to be for it), so batches go to PostgreSQL first."""
    store = DurableStore(
        repository, spool, Metrics(),
        prepare_database=functools.partial(asyncio.to_thread, prepare_database, database_url),
    )
    await store.confirm_database(at_start=True)
    return store


def gate_database_writes(repository) -> asyncio.Event:
    """Hold every ticket INSERT of `repository` until the returned event is set, so a
    test can line requests up behind a commit that has not happened yet."""
    gate = asyncio.Event()
    store = repository.store_tickets

    async def gated_store(*, tickets):
        await gate.wait()
        return await store(tickets=tickets)

    repository.store_tickets = gated_store
    return gate
