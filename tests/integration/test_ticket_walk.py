"""GET /tickets over a window of many days, walked newest day first by migration 0008's
functions: the same tickets, in the same order, with the same cursors as the single
statement planned with the window's bounds (which reads a window of one or two days)."""

from __future__ import annotations

from datetime import datetime, time, timedelta, timezone

import psycopg2
import pytest

from myticket.core.domain import IncomingTicket
from myticket.core.ids import new_delivery_id
from myticket.core.ticket_search import ERROR_CHARS, STATUSES, encode_cursor, walks_by_day
from myticket.db.resources import load_queries
from myticket.web.typedefs import REPOSITORY

from .test_ticket_search import MALFORMED, listed, stored

DAY = timedelta(days=1)


def body(number: int, order_ref: str) -> bytes:
    return (f"Order: {order_ref}\nTotal: 3.00\n\nproduct,product_id,price\n"
            f"Thing,P1,2.00\nOther,P{100 + number},1.00\n").encode()


@pytest.fixture
async def midnight(quiet_app) -> datetime:
    """Tickets on five of the last six days (four days ago holds none): at each day's first
    and last millisecond and at noon, three or four at each instant (processed, rejected,
    some duplicates), and two still pending; returns today's midnight (UTC)."""
    repository = quiet_app.server.app[REPOSITORY]
    today = datetime.combine(datetime.now(timezone.utc).date(), time(), tzinfo=timezone.utc)
    number = 0
    for back in (6, 5, 3, 2, 1):
        day = today - back * DAY
        for at in (day + timedelta(milliseconds=1), day + timedelta(hours=12), day + DAY - timedelta(milliseconds=1)):
            bodies = [body(number, f"R-{number % 3}"), MALFORMED + str(number).encode()]
            if number % 4 == 3:
                bodies.append(body(number - 2, f"R-{(number - 2) % 3}"))  # a duplicate of an earlier ticket
            await stored(repository, *bodies, at=at)
            number += 1
    for at in (today - 2 * DAY + timedelta(hours=3), today - 5 * DAY + timedelta(hours=3)):
        ticket_id, received_at = new_delivery_id(at)
        await repository.store_tickets(tickets=[IncomingTicket(ticket_id, received_at, "text/plain", b"pending")])
    return today


SEARCHES = [
    {},
    {"statuses": ("rejected",)},
    {"statuses": ("pending",)},
    {"statuses": ("processed", "duplicate")},
    {"order_ref": "R-1"},
    {"order_ref": "R-2", "statuses": ("processed",)},
    {"product_id": "P1"},
    {"product_id": "P1", "order_ref": "R-0"},
]


def query_string(search: dict, since: datetime, until: datetime) -> str:
    parts = [f"since={since.isoformat()}", f"until={until.isoformat()}"]
    parts += [f"status={status}" for status in search.get("statuses", ())]
    parts += [f"{name}={search[name]}" for name in ("order_ref", "product_id") if name in search]
    return "&".join(parts).replace("+", "%2B")


def statement_of(search: dict) -> str:
    if "product_id" in search:
        return "tickets_page_by_product"
    return "tickets_page_by_order_ref" if "order_ref" in search else "tickets_page"


def page_rows(cur, name: str, search: dict, since: datetime, until: datetime,
              after: tuple[datetime, str] | None, limit: int) -> list[tuple]:
    """The rows of the shipped query `name` with the parameters Repository.find_tickets gives it."""
    params = {
        "statuses": list(search.get("statuses", STATUSES)), "since": since,
        "until": min(until, after[0] + timedelta(microseconds=1)) if after else until,
        "order_ref": search.get("order_ref"), "product_id": search.get("product_id"),
        "after_received_at": after[0] if after else None, "after_id": after[1] if after else None,
        "limit": limit, "error_chars": ERROR_CHARS + 1,
    }
    cur.execute(load_queries()[name], params)
    return cur.fetchall()


def windows(midnight: datetime) -> list[tuple[datetime, datetime]]:
    return [
        (midnight - 7 * DAY, datetime.now(timezone.utc)),
        # Cuts into the oldest day, and ends at a midnight: yesterday is outside.
        (midnight - 6 * DAY + timedelta(hours=6), midnight - DAY),
        (midnight - 5 * DAY, midnight - 2 * DAY + timedelta(hours=12, milliseconds=1)),
    ]


@pytest.fixture
def cur(database_url: str):
    conn = psycopg2.connect(database_url)
    conn.autocommit = True
    with conn.cursor() as cursor:
        yield cursor
    conn.close()


async def test_pages_of_a_walked_window_are_the_planned_statements_pages(quiet_app, cur, midnight):
    for since, until in windows(midnight):
        assert walks_by_day(since, until)
        for search in SEARCHES:
            name = statement_of(search)
            expected = page_rows(cur, name, search, since, until, None, 1000)
            case = f"{search} in [{since}, {until})"
            assert expected, case
            assert [row[1] for row in expected] == sorted((row[1] for row in expected), reverse=True), case
            # Every row as the single statement gives it, page after page, cursors alike.
            for limit in (1, 2, 5, 1000):
                after = None
                walked: list[tuple] = []
                while True:
                    rows = page_rows(cur, f"{name}_walked", search, since, until, after, limit + 1)
                    assert rows == page_rows(cur, name, search, since, until, after, limit + 1), case
                    walked += rows[:limit]
                    if len(rows) <= limit:
                        break
                    after = (rows[limit - 1][1], rows[limit - 1][0])
                assert walked == expected, (case, limit)
            # And over HTTP, which takes the walk for such a window.
            for limit in (1, 3, 4):
                seen: list[str] = []
                after_text = ""
                while True:
                    page = await listed(quiet_app, f"{query_string(search, since, until)}&limit={limit}{after_text}")
                    seen += [ticket["id"] for ticket in page["tickets"]]
                    if page["next_after"] is None:
                        break
                    assert len(page["tickets"]) == limit, case
                    last = page["tickets"][-1]
                    assert page["next_after"] == encode_cursor(datetime.fromisoformat(last["received_at"]), last["id"])
                    after_text = f"&after={page['next_after']}"
                assert seen == [row[0] for row in expected], (case, limit)


async def test_pages_cross_midnights_and_skip_a_day_without_tickets(quiet_app, midnight):
    since = midnight - 7 * DAY
    tickets = (await listed(quiet_app, f"since={since.isoformat()}&limit=1000".replace("+", "%2B")))["tickets"]
    days = [datetime.fromisoformat(ticket["received_at"]).date() for ticket in tickets]
    assert sorted(set(days), reverse=True) == [(midnight - back * DAY).date() for back in (1, 2, 3, 5, 6)]
    # Pages of four: some hold the last tickets of one day and the first of the day before.
    pages, after_text = [], ""
    while True:
        page = await listed(quiet_app, f"since={since.isoformat()}&limit=4{after_text}".replace("+", "%2B"))
        pages.append([datetime.fromisoformat(ticket["received_at"]).date() for ticket in page["tickets"]])
        if page["next_after"] is None:
            break
        after_text = f"&after={page['next_after']}"
    assert sum(pages, []) == days
    assert any(len(set(page)) > 1 for page in pages)
    # A cursor on the last ticket before a midnight (newest first: the day's first instant)
    # leads to the day before, over the day without tickets.
    last = max(index for index, day in enumerate(days) if day == (midnight - 3 * DAY).date())
    cursor = encode_cursor(datetime.fromisoformat(tickets[last]["received_at"]), tickets[last]["id"])
    page = await listed(quiet_app, f"since={since.isoformat()}&limit=2&after={cursor}".replace("+", "%2B"))
    assert [ticket["id"] for ticket in page["tickets"]] == [ticket["id"] for ticket in tickets[last + 1:last + 3]]
    assert {datetime.fromisoformat(ticket["received_at"]).date() for ticket in page["tickets"]} == {(midnight - 5 * DAY).date()}


async def test_the_widest_window_and_an_empty_one_are_answered(quiet_app, midnight):
    everything = await listed(quiet_app, "since=0001-01-01&until=9999-12-31T23:59:59&limit=1000")
    recent = await listed(quiet_app, f"since={(midnight - 7 * DAY).isoformat()}&limit=1000".replace("+", "%2B"))
    assert [ticket["id"] for ticket in everything["tickets"]] == [ticket["id"] for ticket in recent["tickets"]]
    # Two at each of the 15 instants, three duplicates, two pending.
    assert len(everything["tickets"]) == 15 * 2 + 3 + 2
    empty = await listed(quiet_app, f"since={(midnight - 40 * DAY).isoformat()}&until={(midnight - 20 * DAY).isoformat()}"
                         .replace("+", "%2B"))
    assert empty == {"tickets": [], "next_after": None}
