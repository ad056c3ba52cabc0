"""Idempotency-Key (and Standard Webhooks' webhook-id) on POST /ticket.

A request with a key is looked up before it is stored: the same key with the same body
within the key's lifetime answers the first ticket's id (`Idempotent-Replayed: true`)
and stores nothing; with another body it is 409. A new key is noted once its ticket is
stored, so a key never names a ticket that was not stored. Requests without a key run
no statement of this module.

While PostgreSQL cannot be reached (the service spools), keys are neither looked up nor
noted: the ticket is spooled as any other and its 202 promises what any 202 does, that
it is stored. A retry meanwhile is stored again, and marked duplicate by its body's
digest when processed; a retry after the outage, of a key that could not be noted,
likewise. Two retries racing with one new key are both stored, the later one likewise
marked duplicate.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime, timezone

from aiohttp import web

from ..core.database_errors import DatabaseUnavailable, DataRejected
from ..core.domain import IncomingTicket
from ..telemetry.metrics import RefusalReason
from ..core.idempotency import BadIdempotencyKey, idempotency_key, oldest_live_day
from .errors import ApiError
from .typedefs import METRICS, REPOSITORY, SETTINGS

log = logging.getLogger(__name__)

REPLAYED_HEADER = "Idempotent-Replayed"


def request_key(request: web.Request) -> str | None:
    """The request's key (checked), None without one; 400 for a malformed one."""
    try:
        return idempotency_key(request.headers.get("Idempotency-Key"), request.headers.get("webhook-id"))
    except BadIdempotencyKey as exc:
        request.app[METRICS].refuse(RefusalReason.BAD_HEADER)
        raise ApiError(400, str(exc)) from None


async def replayed(request: web.Request, key: str, ticket: IncomingTicket) -> web.Response | None:
    """The answer to a key seen before (the first ticket's id, or 409 for another body);
    None for a new key, or when PostgreSQL cannot tell (the ticket is then stored)."""
    settings = request.app[SETTINGS]
    since_day = oldest_live_day(datetime.now(timezone.utc), settings.idempotency_key_hours)
    try:
        use = await request.app[REPOSITORY].idempotency_key_use(key=key, since_day=since_day)
    except DatabaseUnavailable as exc:
        log.info("idempotency key of ticket %s not looked up (%s): stored as a new ticket", ticket.id, exc)
        return None
    if use is None:
        return None
    if use.body_sha256 != hashlib.sha256(ticket.body).digest():
        raise ApiError(409, f"this idempotency key was used with another body, for ticket {use.ticket_id}")
    return web.Response(
        body=b'{"id": "%s"}' % use.ticket_id.encode(), status=202, content_type="application/json",
        headers={REPLAYED_HEADER: "true"},
    )


async def remember(request: web.Request, key: str, ticket: IncomingTicket) -> None:
    """Note the key's first use by this stored ticket; a failure is logged, not answered:
    the ticket is stored, and a retry will be marked duplicate by its digest."""
    try:
        await request.app[REPOSITORY].register_idempotency_key(
            key=key, body_sha256=hashlib.sha256(ticket.body).digest(), ticket_id=ticket.id,
            received_at=ticket.received_at,
        )
    except (DatabaseUnavailable, DataRejected) as exc:
        log.info("idempotency key of ticket %s not noted (%s)", ticket.id, exc)
