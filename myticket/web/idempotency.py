"""Idempotency-Key (and Standard Webhooks' webhook-id) on POST /ticket.

A request with a key is looked up before it is stored: the same key with the same body
within the key's lifetime answers the first ticket's id (`Idempotent-Replayed: true`)
and stores nothing; with another body it is 409. A new key rides with its ticket into
group commit and is noted in the statement that stores it, so a key never names a
ticket that was not stored. Requests without a key run no statement of this module.

While PostgreSQL cannot be reached (the service spools), keys are neither looked up nor
noted (the spool keeps no key): the ticket is spooled as any other and its 202 promises
what any 202 does, that it is stored. A retry meanwhile is stored again, and marked duplicate by its body's
digest when processed; a retry after the outage, of a key that could not be noted,
likewise. Two retries racing with one new key are both stored, the later one likewise
marked duplicate.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from datetime import datetime, timezone

from aiohttp import web

from ..core.database_errors import DatabaseUnavailable
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


async def with_key(
    request: web.Request, key: str, ticket: IncomingTicket
) -> tuple[IncomingTicket, web.Response | None]:
    """For a key seen before, the answer (the first ticket's id, or 409 for another
    body); otherwise the ticket carrying its key, to be noted in the commit that stores
    it. When PostgreSQL cannot tell, the ticket is stored as new."""
    digest = hashlib.sha256(ticket.body).digest()
    settings = request.app[SETTINGS]
    since_day = oldest_live_day(datetime.now(timezone.utc), settings.idempotency_key_hours)
    try:
        use = await request.app[REPOSITORY].idempotency_key_use(key=key, since_day=since_day)
    except DatabaseUnavailable as exc:
        log.info("idempotency key of ticket %s not looked up (%s): stored as a new ticket", ticket.id, exc)
        use = None
    if use is None:
        return dataclasses.replace(ticket, idempotency_key=key, body_sha256=digest), None
    if use.body_sha256 != digest:
        raise ApiError(409, f"this idempotency key was used with another body, for ticket {use.ticket_id}")
    replay = web.Response(
        body=b'{"id": "%s"}' % use.ticket_id.encode(), status=202, content_type="application/json",
        headers={REPLAYED_HEADER: "true"},
    )
    return ticket, replay
