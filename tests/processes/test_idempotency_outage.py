"""An Idempotency-Key while PostgreSQL is down: the ticket is spooled and answered 202
as any other, the key is neither looked up nor kept, and a retry is stored again, then
marked duplicate of the first by its body's digest (docs: Send tickets)."""

from __future__ import annotations

from pathlib import Path

from myticket.config import Settings
from myticket.telemetry.metrics import Metrics
from myticket.web.app import init_app
from myticket.web.typedefs import REPOSITORY
from myticket.worker.loop import TicketWorker

from ..paths import REFERENCE_TICKET
from ..waiting import wait_until


async def test_a_keyed_retry_during_an_outage_is_stored_again_and_marked_duplicate(
    aiohttp_client, own_server, own_db, tmp_path: Path
):
    settings = Settings(database_url=own_server.url, data_dir=tmp_path, run_worker=False)
    client = await aiohttp_client(await init_app(settings))
    headers = {"Idempotency-Key": "retry-in-outage"}
    first = await client.post("/ticket", data=REFERENCE_TICKET, headers=headers)
    first_id = (await first.json())["id"]

    own_server.stop(mode="immediate")
    try:
        retry = await client.post("/ticket", data=REFERENCE_TICKET, headers=headers)
        assert retry.status == 202 and "Idempotent-Replayed" not in retry.headers
        retry_id = (await retry.json())["id"]
        assert retry_id != first_id
        assert (await (await client.get("/ready")).json())["spool"]["tickets"] == 1
    finally:
        own_server.start()

    async def replayed() -> bool:
        spool = (await (await client.get("/ready")).json())["spool"]
        return spool["tickets"] == 0 and spool["mode"] is False

    await wait_until(replayed, timeout=30, what="the spool to be replayed")
    repository = client.server.app[REPOSITORY]
    await TicketWorker(repository, Metrics()).drain()
    assert await repository.ticket_status(ticket_id=first_id) == "processed"
    duplicate = await repository.ticket(ticket_id=retry_id)
    assert (duplicate.status, duplicate.duplicate_of) == ("duplicate", first_id)
    # The key still names the first ticket: a retry now is answered its id.
    after = await client.post("/ticket", data=REFERENCE_TICKET, headers=headers)
    assert after.headers["Idempotent-Replayed"] == "true" and (await after.json())["id"] == first_id
    assert len(own_db.rows("stored_ids")) == 2
