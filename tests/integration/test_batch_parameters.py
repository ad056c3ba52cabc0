"""A batch goes to PostgreSQL as one array literal per column (myticket.db.rows.ticket_batch):
whatever bytes a body holds and whatever a Content-Type spells, each is stored exactly."""

from __future__ import annotations

from myticket.core.domain import IncomingTicket
from myticket.core.ids import new_delivery_id
from myticket.db.repository import Repository

from ..database import Db

# Bodies and Content-Types that an array literal must quote or escape: every byte value,
# quotes, backslashes, braces, commas, the word NULL, and no Content-Type at all.
AWKWARD = [
    (bytes(range(256)), None),
    (b'"\\x00",{NULL}\n', 'text/plain; charset="utf-8"'),
    (b"\\\\", "a\\b,{c}"),
    (b"NULL", "NULL"),
    (b" x ", " "),
]


async def test_awkward_bodies_and_content_types_are_stored_exactly(database_url: str, db: Db):
    tickets = []
    for body, content_type in AWKWARD:
        ticket_id, received_at = new_delivery_id()
        tickets.append(IncomingTicket(id=ticket_id, received_at=received_at, content_type=content_type, body=body))
    repository = await Repository.connect(database_url)
    try:
        assert await repository.store_tickets(tickets=tickets) == len(tickets)
        # A replay of the same batch (the spool's) stores nothing twice.
        assert await repository.store_tickets(tickets=tickets) == 0
    finally:
        await repository.close()
    for ticket in tickets:
        [(stored_id, body, content_type, status)] = db.rows("ticket_delivery", {"id": ticket.id})
        assert (stored_id, bytes(body), content_type, status) == (ticket.id, ticket.body, ticket.content_type, "pending")
