"""GET /tickets/{id} answers a page of the ticket's lines, so that reading a ticket of
100,000 lines never builds megabytes of JSON on the event loop that takes tickets in."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import pytest

from myticket.telemetry.metrics import Metrics
from myticket.core.domain import IncomingTicket
from myticket.web.typedefs import REPOSITORY
from myticket.worker.loop import TicketWorker

from ..helpers import ticket_with


async def test_a_ticket_of_250_lines_is_read_in_pages(quiet_app):
    repository = quiet_app.server.app[REPOSITORY]
    rows = "".join(f"Item {n},I{n:03d},1.00\n" for n in range(250))
    body = f"Order: pages\nTotal: 250.00\n\nproduct,product_id,price\n{rows}".encode()
    ticket = IncomingTicket(str(uuid.uuid4()), datetime.now(timezone.utc), "text/plain", body)
    await repository.store_tickets(tickets=[ticket])
    await TicketWorker(repository, Metrics()).drain()

    first = await (await quiet_app.get(f"/tickets/{ticket.id}")).json()
    assert first["status"] == "processed"
    assert first["line_count"] == 250
    assert len(first["lines"]) == 100
    assert first["next_lines_after"] == first["lines"][-1]["line_number"]

    product_ids: list[str] = []
    pages = 0
    after = 0
    while after is not None:
        page = await (await quiet_app.get(f"/tickets/{ticket.id}?lines_after={after}&lines_limit=50")).json()
        assert page["line_count"] == 250
        product_ids += [line["product_id"] for line in page["lines"]]
        after = page["next_lines_after"]
        pages += 1
    # Five full pages, the last with no next page; every line once, in order.
    assert pages == 5
    assert product_ids == [f"I{n:03d}" for n in range(250)]

    past_the_end = await (await quiet_app.get(f"/tickets/{ticket.id}?lines_after=100000")).json()
    assert (past_the_end["lines"], past_the_end["next_lines_after"], past_the_end["line_count"]) == ([], None, 250)


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("lines_limit=0", "lines_limit"),
        ("lines_limit=1001", "lines_limit"),
        ("lines_limit=ten", "lines_limit"),
        ("lines_after=-1", "lines_after"),
        ("lines_after=x", "lines_after"),
    ],
)
async def test_a_bad_page_of_lines_is_a_400_naming_the_parameter(quiet_app, query, named):
    ticket = ticket_with("1", "P1", "A", "1.00", received_at=datetime.now(timezone.utc))
    await quiet_app.server.app[REPOSITORY].store_tickets(tickets=[ticket])

    response = await quiet_app.get(f"/tickets/{ticket.id}?{query}")

    assert response.status == 400
    assert named in (await response.json())["error"]
