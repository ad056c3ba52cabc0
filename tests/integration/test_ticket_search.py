"""GET /tickets (filters, window, pages), GET /tickets/{id}/body, and requeueing one
ticket or many over HTTP; each filter's plan read from its index in the window's days."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import date, datetime, time, timedelta, timezone

import pytest

from myticket.core.domain import IncomingTicket
from myticket.core.ids import new_delivery_id
from myticket.core.ticket_search import TicketSearch
from myticket.telemetry.metrics import Metrics
from myticket.web.app import init_app
from myticket.web.typedefs import REPOSITORY
from myticket.worker.loop import TicketWorker

from ..database import planned_nodes
from ..paths import REFERENCE_TICKET

MALFORMED = b"this is not a ticket"


def good_ticket(order: str, product_id: str) -> bytes:
    return f"Order: {order}\nTotal: 2.00\n\nproduct,product_id,price\nThing,{product_id},2.00\n".encode()


async def stored(repository, *bodies: bytes, at: datetime | None = None, content_type: str | None = "text/plain"):
    """Tickets stored as POST /ticket stores them (UUIDv7 ids), then processed."""
    tickets = []
    for body in bodies:
        ticket_id, received_at = new_delivery_id(at)
        tickets.append(IncomingTicket(ticket_id, received_at, content_type, body))
    await repository.store_tickets(tickets=tickets)
    await TicketWorker(repository, Metrics()).drain()
    return [ticket.id for ticket in tickets]


async def listed(client, query: str = "") -> dict:
    response = await client.get(f"/tickets?{query}")
    assert response.status == 200, await response.text()
    return await response.json()


async def test_rejected_tickets_are_found_newest_first_with_their_shortened_error(quiet_app):
    repository = quiet_app.server.app[REPOSITORY]
    long_error_body = b"Order: 1\nTotal: x" + b"y" * 500 + b"\n\nproduct,product_id,price\n"
    first_rejected, processed, second_rejected = [
        (await stored(repository, body))[0] for body in (MALFORMED, REFERENCE_TICKET, long_error_body)
    ]

    page = await listed(quiet_app, "status=rejected")

    assert [ticket["id"] for ticket in page["tickets"]] == [second_rejected, first_rejected]
    assert page["next_after"] is None
    item = page["tickets"][1]
    assert set(item) == {"id", "received_at", "status", "error", "warning_count", "order_ref", "duplicate_of"}
    assert item["status"] == "rejected" and item["error"]
    whole = (await (await quiet_app.get(f"/tickets/{second_rejected}")).json())["error"]
    if len(whole) > 200:
        assert page["tickets"][0]["error"] == whole[:199] + "…"
    everything = await listed(quiet_app)
    assert [ticket["id"] for ticket in everything["tickets"]] == [second_rejected, processed, first_rejected]


async def test_status_order_ref_and_product_id_each_choose_their_tickets(quiet_app):
    repository = quiet_app.server.app[REPOSITORY]
    a1 = (await stored(repository, good_ticket("A-1", "P1")))[0]
    b2 = (await stored(repository, good_ticket("B-2", "P2")))[0]
    duplicate = (await stored(repository, good_ticket("B-2", "P2")))[0]
    rejected = (await stored(repository, MALFORMED))[0]
    ticket_id, received_at = new_delivery_id()
    await repository.store_tickets(tickets=[IncomingTicket(ticket_id, received_at, None, b"later")])  # pending

    def ids(page: dict) -> list[str]:
        return [ticket["id"] for ticket in page["tickets"]]

    assert ids(await listed(quiet_app, "status=pending")) == [ticket_id]
    assert ids(await listed(quiet_app, "status=rejected&status=duplicate")) == [rejected, duplicate]
    assert ids(await listed(quiet_app, "status=processed,duplicate")) == [duplicate, b2, a1]
    # A duplicate is not parsed again: it has no order reference of its own.
    assert ids(await listed(quiet_app, "order_ref=B-2")) == [b2]
    assert ids(await listed(quiet_app, "order_ref=B-2&status=rejected")) == []
    assert ids(await listed(quiet_app, "product_id=P1")) == [a1]
    assert ids(await listed(quiet_app, "product_id=P2&order_ref=A-1")) == []
    [dup] = (await listed(quiet_app, "status=duplicate"))["tickets"]
    assert dup["duplicate_of"] == b2


async def test_since_and_until_bound_the_window_and_pages_cover_it_once(quiet_app):
    repository = quiet_app.server.app[REPOSITORY]
    days_ago = [datetime.now(timezone.utc) - timedelta(days=n, minutes=5) for n in (3, 2, 1)]
    by_day = [await stored(repository, *(MALFORMED + str(n).encode() for n in range(5)), at=at) for at in days_ago]

    # The default window is the last 24 hours: none of these.
    assert (await listed(quiet_app))["tickets"] == []
    since = (days_ago[1] - timedelta(hours=1)).isoformat()
    until = (days_ago[2] - timedelta(hours=1)).isoformat()
    seen: list[str] = []
    after = ""
    pages = 0
    while True:
        page = await listed(quiet_app, f"since={since}&until={until}&limit=2&status=rejected{after}".replace("+", "%2B"))
        seen += [ticket["id"] for ticket in page["tickets"]]
        pages += 1
        if page["next_after"] is None:
            break
        after = f"&after={page['next_after']}"
    assert pages == 3
    # The five tickets of one millisecond share an instant: ordered by id within it.
    assert sorted(seen) == sorted(by_day[1]) and len(seen) == 5


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("status=lost", "status"),
        ("since=yesterday", "since"),
        ("until=2026-13-01", "until"),
        ("limit=0", "limit"),
        ("limit=", "limit"),
        ("limit=1001", "limit"),
        ("after=nonsense", "after"),
    ],
)
async def test_a_bad_filter_is_a_400_naming_it(quiet_app, query, named):
    response = await quiet_app.get(f"/tickets?{query}")
    assert response.status == 400
    assert (await response.json())["error"].startswith(named)


async def test_a_window_that_ends_before_it_starts_is_empty(quiet_app):
    await stored(quiet_app.server.app[REPOSITORY], MALFORMED)
    assert (await listed(quiet_app, "since=2026-02-02&until=2026-02-01"))["tickets"] == []


async def test_the_body_is_the_exact_bytes_with_their_content_type(quiet_app):
    repository = quiet_app.server.app[REPOSITORY]
    raw = "Order: é\n\x00\xff".encode("latin-1")
    [typed] = await stored(repository, raw, content_type="text/csv; charset=windows-1252")
    [untyped] = await stored(repository, b"\x00\x01 no type", content_type=None)

    response = await quiet_app.get(f"/tickets/{typed}/body")
    assert response.status == 200
    assert await response.read() == raw
    assert response.headers["Content-Type"] == "text/csv; charset=windows-1252"
    response = await quiet_app.get(f"/tickets/{untyped}/body")
    assert (await response.read(), response.headers["Content-Type"]) == (b"\x00\x01 no type", "application/octet-stream")
    for unknown in (str(uuid.uuid4()), new_delivery_id()[0], "not-an-id"):
        assert (await quiet_app.get(f"/tickets/{unknown}/body")).status == 404


async def test_one_ticket_is_requeued_or_refused_with_the_reason(quiet_app):
    repository = quiet_app.server.app[REPOSITORY]
    rejected, processed = await stored(repository, MALFORMED, REFERENCE_TICKET)
    [duplicate] = await stored(repository, REFERENCE_TICKET)

    for ticket_id in (rejected, duplicate):
        response = await quiet_app.post(f"/tickets/{ticket_id}/reprocess")
        assert response.status == 202
        assert await response.json() == {"id": ticket_id, "status": "pending"}
        assert await repository.ticket_status(ticket_id=ticket_id) == "pending"

    again = await quiet_app.post(f"/tickets/{rejected}/reprocess")
    assert again.status == 409 and "pending" in (await again.json())["error"]
    refused = await quiet_app.post(f"/tickets/{processed}/reprocess")
    assert refused.status == 409 and "processed" in (await refused.json())["error"]
    assert await repository.ticket_status(ticket_id=processed) == "processed"
    assert (await quiet_app.post(f"/tickets/{uuid.uuid4()}/reprocess")).status == 404

    await TicketWorker(repository, Metrics()).drain()
    assert await repository.ticket_status(ticket_id=rejected) == "rejected"


async def test_bulk_requeue_takes_the_filters_and_counts(quiet_app):
    repository = quiet_app.server.app[REPOSITORY]
    two_days_ago = datetime.now(timezone.utc) - timedelta(days=2)
    old = await stored(repository, MALFORMED + b"1", MALFORMED + b"2", at=two_days_ago)
    recent = await stored(repository, MALFORMED + b"3", REFERENCE_TICKET)
    await stored(repository, good_ticket("D-1", "P9"), at=two_days_ago + timedelta(minutes=1))
    [duplicate] = await stored(repository, good_ticket("D-1", "P9"), at=two_days_ago + timedelta(minutes=2))

    assert (await quiet_app.post("/tickets/reprocess")).status == 400  # since is required
    assert (await quiet_app.post("/tickets/reprocess?since=2020-01-01&status=processed")).status == 400
    assert (await quiet_app.post("/tickets/reprocess?since=2020-01-01&product_id=P1")).status == 400

    since = (two_days_ago - timedelta(hours=1)).isoformat().replace("+", "%2B")
    until = (two_days_ago + timedelta(hours=1)).isoformat().replace("+", "%2B")
    response = await quiet_app.post(f"/tickets/reprocess?since={since}&until={until}")
    assert response.status == 202
    assert (await response.json())["requeued"] == 2
    assert [await repository.ticket_status(ticket_id=t) for t in old + recent + [duplicate]] == [
        "pending", "pending", "rejected", "processed", "duplicate"  # rejected ones only, unless asked
    ]
    response = await quiet_app.post(f"/tickets/reprocess?since={since}&until={until}&status=duplicate")
    assert (await response.json())["requeued"] == 1
    assert await repository.ticket_status(ticket_id=duplicate) == "pending"


async def test_requeueing_takes_an_admin_token_once_one_is_set(aiohttp_client, settings, db):
    admin, reader = "a" * 24, "r" * 24
    app = await init_app(dataclasses.replace(settings, run_worker=False, api_tokens=(reader,), admin_tokens=(admin,)))
    client = await aiohttp_client(app)
    [rejected] = await stored(app[REPOSITORY], MALFORMED)

    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    assert (await client.get("/tickets", headers=bearer(reader))).status == 200
    assert (await client.get(f"/tickets/{rejected}/body", headers=bearer(reader))).status == 200
    assert (await client.get("/tickets")).status == 401
    assert (await client.post(f"/tickets/{rejected}/reprocess", headers=bearer(reader))).status == 401
    assert (await client.post("/tickets/reprocess?since=2020-01-01", headers=bearer(reader))).status == 401
    assert await app[REPOSITORY].ticket_status(ticket_id=rejected) == "rejected"
    assert (await client.post(f"/tickets/{rejected}/reprocess", headers=bearer(admin))).status == 202


# ---- Plans: each filter from its index, in the window's partitions only -------------

FILL_DAYS = 5


@pytest.fixture
def filled_days(db) -> date:
    """Five days of tickets; the last one is yesterday (UTC)."""
    last_day = datetime.now(timezone.utc).date() - timedelta(days=1)
    db.rows("make_days_of_partitions", {"days": FILL_DAYS, "last_day": last_day})
    db.rows("fill_days_of_tickets", {"per_day": 4000, "days": FILL_DAYS, "last_day": last_day})
    db.rows("analyze_ticket_tables")
    return last_day


def explained(database_url: str, name: str, search: TicketSearch, after=None) -> list[dict]:
    """The nodes of the plan of the shipped query `name`, with the parameters
    Repository.find_tickets gives it."""
    after_received_at, after_id = after if after is not None else (None, None)
    return planned_nodes(database_url, name, {
        "statuses": list(search.statuses), "since": search.since, "until": search.until,
        "order_ref": search.order_ref, "product_id": search.product_id,
        "after_received_at": after_received_at, "after_id": after_id, "limit": 101, "error_chars": 201,
    })


PARTITIONED = ("deliveries", "ticket_outcomes", "ticket_lines")
# A bitmap heap scan reads the rows its bitmap index scan (below it) found.
INDEX_SCANS = ("Index Scan", "Index Only Scan", "Bitmap Index Scan", "Bitmap Heap Scan")


PLAN_CASES = [
    ("tickets_page", {"statuses": ("rejected",)}, "status_received"),
    ("tickets_page", {"statuses": ("processed", "duplicate")}, "status_received"),
    ("tickets_page", {"statuses": ("pending",)}, "pending_tickets_pkey"),
    ("tickets_page", {"statuses": ("pending", "processed", "rejected", "duplicate")}, "status_received"),
    ("tickets_page_by_order_ref", {"statuses": ("processed",), "order_ref": "ORD-6"}, "order_ref"),
    ("tickets_page_by_product", {"statuses": ("processed",), "product_id": "P7"}, "product_id_received"),
    ("tickets_page_by_product", {"statuses": ("processed",), "product_id": "P7", "order_ref": "ORD-6"},
     "product_id_received"),
]


def test_each_filter_reads_its_index_in_the_window_days_only(database_url, filled_days):
    window_days = [filled_days - timedelta(days=2), filled_days - timedelta(days=1)]
    since = datetime.combine(window_days[0], time(10), tzinfo=timezone.utc)
    until = datetime.combine(window_days[1], time(10), tzinfo=timezone.utc)
    allowed_suffixes = {day.strftime("%Y%m%d") for day in window_days}
    for name, filters, index in PLAN_CASES:
        for after in (None, (until - timedelta(hours=1), str(uuid.uuid4()))):
            nodes = explained(database_url, name, TicketSearch(since=since, until=until, **filters), after)
            case = f"{name} {filters} after={after is not None}: " + "; ".join(
                f"{node['Node Type']} {node.get('Relation Name', '')} {node.get('Index Name', '')}" for node in nodes
            )
            scanned = [node for node in nodes if "Relation Name" in node]
            assert scanned, case
            assert [node["Node Type"] for node in scanned if node["Node Type"] not in INDEX_SCANS] == [], case
            assert any(index in node.get("Index Name", "") for node in nodes), case
            for node in scanned:
                relation = node["Relation Name"]
                if relation.startswith(PARTITIONED):
                    assert relation.rsplit("_", 1)[1] in allowed_suffixes, (case, relation)
                else:
                    assert relation == "pending_tickets", (case, relation)
