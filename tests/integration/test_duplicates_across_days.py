"""A body is a duplicate of the first ticket processed with it on the earliest day kept:
one row per body and day in one table (processed_bodies), looked up by digest whatever
the number of days."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone

import pytest

from myticket.archive.commands import archive_before, purge_before, restore_paths
from myticket.core.domain import IncomingTicket
from myticket.core.ids import new_delivery_id
from myticket.core.processing import body_digest
from myticket.telemetry.metrics import Metrics
from myticket.worker.loop import TicketWorker
from myticket.web.typedefs import REPOSITORY

from ..database import planned_nodes

BODY = b"Order: 31\nTotal: 1.00\n\nproduct,product_id,price\nTea,T1,1.00\n"
FIRST_DAY = date(2003, 3, 1)
LATER_DAY = date(2003, 3, 5)
DAYS = [FIRST_DAY + timedelta(days=n) for n in range(30)]  # LATER_DAY among them


@pytest.fixture(autouse=True)
def days_dropped_after(days_to_drop):
    days_to_drop.extend(DAYS)


def received_on(day: date, minute: int = 0) -> IncomingTicket:
    ticket_id, at = new_delivery_id(datetime.combine(day, time(12, minute), tzinfo=timezone.utc))
    return IncomingTicket(ticket_id, at, "text/plain", BODY)


async def processed(repository, ticket: IncomingTicket):
    """Store one ticket, let a worker drain the queue, and read what became of it."""
    assert await repository.store_tickets(tickets=[ticket]) == 1
    await TicketWorker(repository, Metrics()).drain()
    return await repository.ticket(ticket_id=ticket.id)


async def test_a_purged_original_is_forgotten_at_once_and_its_digest_deleted_by_maintenance(quiet_app, db):
    repository = quiet_app.server.app[REPOSITORY]
    first = received_on(FIRST_DAY)
    assert (await processed(repository, first)).status == "processed"
    later = await processed(repository, received_on(LATER_DAY))
    assert (later.status, later.duplicate_of) == ("duplicate", first.id)

    [purged, *_] = await purge_before(repository, before=FIRST_DAY + timedelta(days=1), require_archive=False)
    assert (purged.day, purged.purged) == (FIRST_DAY, True)

    # The first ticket is gone: the same body is new again, though its digest row is still there
    # (the look-up ignores it).
    taken_over = received_on(LATER_DAY, minute=1)
    assert (await processed(repository, taken_over)).status == "processed"

    midnight = datetime.combine(FIRST_DAY, time(0), tzinfo=timezone.utc)
    assert await repository.forget_purged_digests() == [midnight]
    assert await repository.forget_purged_digests() == []
    assert db.rows("digest_rows") == [(body_digest(BODY).hex(), taken_over.id)]
    again = await processed(repository, received_on(LATER_DAY, minute=2))
    assert (again.status, again.duplicate_of) == ("duplicate", taken_over.id)


async def test_a_restored_day_is_first_again_and_its_second_purge_leaves_the_later_day_first(
    quiet_app, db, tmp_path
):
    """A trial found the body forgotten altogether once a restored day was purged again,
    when one row per body was kept: the later day's processed ticket had lost its row."""
    repository = quiet_app.server.app[REPOSITORY]
    first = received_on(FIRST_DAY)
    assert (await processed(repository, first)).status == "processed"
    [archived] = await archive_before(repository, before=FIRST_DAY + timedelta(days=1), directory=tmp_path)
    [purged] = await purge_before(repository, before=FIRST_DAY + timedelta(days=1), require_archive=True)
    assert purged.purged
    taken_over = received_on(LATER_DAY)  # the first of its body among the days kept now
    assert (await processed(repository, taken_over)).status == "processed"

    await restore_paths(repository, [archived.file])

    assert sorted(db.rows("digest_rows")) == sorted([(body_digest(BODY).hex(), first.id),
                                                     (body_digest(BODY).hex(), taken_over.id)])
    again = await processed(repository, received_on(LATER_DAY, minute=1))
    assert (again.status, again.duplicate_of) == ("duplicate", first.id)

    [purged_again] = await purge_before(repository, before=FIRST_DAY + timedelta(days=1), require_archive=False)
    assert purged_again.purged
    assert len(await repository.forget_purged_digests()) == 1
    last = await processed(repository, received_on(LATER_DAY, minute=2))
    assert (last.status, last.duplicate_of) == ("duplicate", taken_over.id)


async def test_the_look_up_reads_one_index_however_many_days_are_kept(quiet_app, db, database_url):
    repository = quiet_app.server.app[REPOSITORY]
    await repository.create_day_partitions(days=DAYS)
    db.rows("fill_digests", {"first_day": datetime.combine(FIRST_DAY, time(0), tzinfo=timezone.utc),
                             "days": len(DAYS), "digests": 20_000})

    nodes = planned_nodes(database_url, "first_tickets_with_bodies",
                          {"digests": [body_digest(str(n).encode()) for n in range(480)]})

    # No day's partition, and the digests probed in the key's index, not joined.
    assert {node["Relation Name"] for node in nodes if "Relation Name" in node} == {
        "processed_bodies", "forgotten_digest_days",
    }
    assert {node["Index Name"] for node in nodes if "Index Name" in node} == {"processed_bodies_pkey"}
