"""A claim's bodies are read from the partitions of the claim's days only, however many
days are kept: the plan of claimed_bodies is pruned by the literal bounds it is given."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone

from myticket.core.ids import new_delivery_id
from myticket.web.typedefs import REPOSITORY

from ..database import planned_nodes

FIRST_DAY = date(2004, 5, 1)
DAYS = [FIRST_DAY + timedelta(days=n) for n in range(30)]


async def test_the_bodies_of_a_claim_are_read_in_its_days_partitions_only(quiet_app, database_url, days_to_drop):
    repository = quiet_app.server.app[REPOSITORY]
    days_to_drop.extend(DAYS)
    await repository.create_day_partitions(days=DAYS)
    claimed = [new_delivery_id(datetime.combine(FIRST_DAY + timedelta(days=day), time(9), tzinfo=timezone.utc))
               for day in (3, 4)]
    tickets = ",".join(f"{ticket_id}|{received_at.isoformat()}" for ticket_id, received_at in claimed)

    nodes = planned_nodes(database_url, "claimed_bodies", {
        "tickets": tickets, "since": claimed[0][1], "until": claimed[-1][1],
    })

    assert {node["Relation Name"] for node in nodes if "Relation Name" in node} == {
        "deliveries_20040504", "deliveries_20040505",
    }
