"""The gauges the alert rules watch: the oldest pending ticket's age, the database as
the worker sees it, and the spool's mode and cap."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from myticket.web.typedefs import METRICS, REPOSITORY, SETTINGS
from myticket.worker.loop import TicketWorker

from ..helpers import sample, ticket_with
from ..waiting import wait_until


async def test_the_oldest_pending_ticket_s_age_is_published_then_0_once_processed(quiet_app):
    app = quiet_app.server.app
    worker = TicketWorker(app[REPOSITORY], app[METRICS])
    two_minutes_ago = datetime.now(timezone.utc) - timedelta(minutes=2)
    await app[REPOSITORY].store_tickets(
        tickets=[ticket_with(str(n), "P", "N", "1", received_at=two_minutes_ago + timedelta(seconds=n)) for n in range(3)]
    )

    await worker.refresh_backlog(force=True)
    text = await (await quiet_app.get("/metrics")).text()
    assert sample(text, "myticket_pending_tickets") == 3
    assert 120 <= sample(text, "myticket_oldest_pending_age_seconds") < 600
    assert sample(text, "myticket_database_up") == 1

    await worker.drain()
    await worker.refresh_backlog(force=True)
    text = await (await quiet_app.get("/metrics")).text()
    assert sample(text, "myticket_oldest_pending_age_seconds") == 0


async def test_the_spool_s_mode_and_cap_are_exported(quiet_app):
    cap = quiet_app.server.app[SETTINGS].spool_max_bytes

    async def exported() -> bool:
        text = await (await quiet_app.get("/metrics")).text()
        return sample(text, "myticket_spool_max_bytes") == cap and sample(text, "myticket_spooling") == 0

    await wait_until(exported, timeout=15, what="the spool gauges")
