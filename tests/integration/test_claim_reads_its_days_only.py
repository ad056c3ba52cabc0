"""A claim's bodies are read from the partitions of the claim's days only, however many
days are kept: the plan of claimed_bodies is pruned by the literal bounds it is given."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone

import psycopg2
import pytest

from myticket.core.ids import new_delivery_id
from myticket.db.resources import load_queries
from myticket.web.typedefs import REPOSITORY

FIRST_DAY = date(2004, 5, 1)


@pytest.fixture(autouse=True)
def days_dropped_after(db):
    """The days this test makes are dropped after it: the shared test database must not
    keep them (a test archiving every day before a date would find them)."""
    yield
    for offset in range(30):
        db.value("drop_day", {"day": FIRST_DAY + timedelta(days=offset)})


def planned_relations(database_url: str, params: dict) -> set[str]:
    conn = psycopg2.connect(database_url)
    try:
        with conn.cursor() as cur:
            cur.execute("EXPLAIN (FORMAT JSON) " + load_queries()["claimed_bodies"], params)
            [[document]] = cur.fetchall()
    finally:
        conn.close()
    relations = set()

    def walk(node: dict) -> None:
        relations.update([node["Relation Name"]] if "Relation Name" in node else [])
        for child in node.get("Plans", []):
            walk(child)

    walk(document[0]["Plan"])
    return relations


async def test_the_bodies_of_a_claim_are_read_in_its_days_partitions_only(quiet_app, database_url, db):
    repository = quiet_app.server.app[REPOSITORY]
    await repository.create_day_partitions(days=[FIRST_DAY + timedelta(days=n) for n in range(30)])
    claimed = [new_delivery_id(datetime.combine(FIRST_DAY + timedelta(days=day), time(9), tzinfo=timezone.utc))
               for day in (3, 4)]
    tickets = ",".join(f"{ticket_id}|{received_at.isoformat()}" for ticket_id, received_at in claimed)

    relations = planned_relations(database_url, {
        "tickets": tickets, "since": claimed[0][1], "until": claimed[-1][1],
    })

    assert relations == {"deliveries_20040504", "deliveries_20040505"}
