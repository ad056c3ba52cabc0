"""The requeue routes: one rejected or duplicate ticket back in the queue, or every one
chosen by GET /tickets' filters. Who may call them is auth's (MYTICKET_ADMIN_TOKENS)."""

from __future__ import annotations

from aiohttp import web

from ..core.ticket_search import REQUEUEABLE_STATUSES
from .errors import ApiError
from .reads import json_dumps, ticket_id_of, ticket_search
from .typedefs import REPOSITORY

# Why a ticket in each status that cannot be requeued is refused (409).
NOT_REQUEUEABLE = {
    "pending": "it is pending: already in the queue",
    "processed": "it is processed: processed tickets are not requeued (their lines are counted in the catalogue)",
}


async def reprocess_ticket(request: web.Request) -> web.Response:
    """202 once the rejected or duplicate ticket is back in the queue; 409 saying why a
    pending or processed one is not; 404 for an unknown one."""
    ticket_id = ticket_id_of(request)
    repository = request.app[REPOSITORY]
    if await repository.requeue(statuses=REQUEUEABLE_STATUSES, ticket_id=ticket_id):
        return web.json_response({"id": ticket_id, "status": "pending"}, status=202)
    status = await repository.ticket_status(ticket_id=ticket_id)
    if status is None:
        raise ApiError(404, f"no ticket {ticket_id}")
    # Requeued by someone else between the two statements: it is pending now.
    raise ApiError(409, f"ticket {ticket_id} not requeued: {NOT_REQUEUEABLE.get(status, f'it is {status}')}")


async def reprocess_tickets(request: web.Request) -> web.Response:
    """Requeue every ticket GET /tickets would list with the same `status` (rejected by
    default; rejected or duplicate only), `since` (required: a bulk change names its
    window), `until` and `order_ref`; answer how many. product_id is refused: only
    processed tickets have lines, and they are not requeued."""
    if not request.query.get("since"):
        raise ApiError(400, "since is required: say from when tickets are requeued (ISO 8601)")
    if request.query.get("product_id"):
        raise ApiError(400, "product_id: only processed tickets have lines, and processed tickets are not requeued")
    search = ticket_search(request, statuses=REQUEUEABLE_STATUSES, default=("rejected",))
    requeued = await request.app[REPOSITORY].requeue(
        statuses=search.statuses, since=search.since, until=search.until, order_ref=search.order_ref
    )
    return web.json_response(
        {"requeued": requeued, "statuses": list(search.statuses), "since": search.since, "until": search.until},
        status=202, dumps=json_dumps,
    )
