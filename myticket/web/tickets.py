"""POST /ticket: take the body within the size limit, the read timeout and the byte
budget, check who sent it, hand it to group commit, and answer once it is stored."""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import HttpVersion11, StreamReader, web

from ..core.database_errors import DatabaseUnavailable
from ..core.domain import IncomingTicket
from ..core.ids import new_delivery_id
from ..intake.budget import Reservation
from ..intake.group_commit import Overloaded, ShuttingDown
from ..intake.spool import SpoolUnavailable
from ..telemetry.metrics import RefusalReason
from ..telemetry.refusal_log import refused
from .auth import verify_sender
from .idempotency import request_key, with_key
from .errors import RETRY_AFTER_OVERLOADED, RETRY_AFTER_UNAVAILABLE, ApiError
from .text import printable
from .typedefs import BODY_BUDGET, INGEST, METRICS, SETTINGS, TICKET_ID

log = logging.getLogger(__name__)

OVERLOADED_MESSAGE = "too many tickets waiting for storage"
# The same refusal when it is the bytes of bodies in memory that are at their bound.
BYTES_OVERLOADED_MESSAGE = "too many body bytes waiting for storage (MYTICKET_MAX_PENDING_BYTES)"


async def post_ticket(request: web.Request) -> web.Response:
    """Store the exact body durably, then answer 202 with its delivery id.

    The body's bytes are reserved in the app's byte budget from before they are read
    until the ticket is stored or refused, whatever ends the request.
    """
    app = request.app
    key = request_key(request)  # None without an Idempotency-Key or webhook-id: no statement of its own
    reservation = app[BODY_BUDGET].reservation()
    handed_over = False
    try:
        ticket = await _admissible_ticket(request, reservation)
        request[TICKET_ID] = ticket.id
        if key is not None:
            ticket, replay = await with_key(request, key, ticket)
            if replay is not None:
                return replay
        handed_over = True  # from here `submit` releases the reservation, even if this wait is cancelled
        await _store(app, ticket, reservation)
    finally:
        if not handed_over:
            reservation.release()
    app[METRICS].accept()
    log.debug("ticket %s stored (%d bytes)", ticket.id, len(ticket.body), extra={"ticket_id": ticket.id})
    # A uuid needs no JSON escaping: format the answer instead of encoding a dict.
    return web.Response(body=b'{"id": "%s"}' % ticket.id.encode(), status=202, content_type="application/json")


async def _admissible_ticket(request: web.Request, reservation: Reservation) -> IncomingTicket:
    """The request as a ticket that nothing in it can keep from being stored, or the
    ApiError that refuses it (each counted with its reason)."""
    settings = request.app[SETTINGS]
    metrics = request.app[METRICS]
    try:
        content_type = content_type_to_store(request.headers.get("Content-Type"))
    except ApiError as exc:
        metrics.refuse(RefusalReason.BAD_HEADER)
        refused(log, logging.INFO, "POST /ticket bad header", "POST /ticket refused: %s", exc.message)
        raise
    try:
        body = await read_body_within(request, settings.max_body_bytes, settings.read_timeout_seconds, reservation)
    except ApiError:
        metrics.refuse(RefusalReason.TOO_LARGE)
        raise
    except BodyBudgetExhausted:
        metrics.refuse(RefusalReason.OVERLOADED)
        refused(log, logging.INFO, "POST /ticket bytes overloaded", "POST /ticket refused: the bytes of bodies in memory are at MYTICKET_MAX_PENDING_BYTES")
        raise ApiError(503, BYTES_OVERLOADED_MESSAGE, retry_after=RETRY_AFTER_OVERLOADED) from None
    except TimeoutError:
        metrics.refuse(RefusalReason.READ_TIMEOUT)
        raise ApiError(408, f"body not received within {settings.read_timeout_seconds:g} seconds") from None
    except ConnectionResetError:  # aiohttp's "Connection lost" while the body was arriving
        # The sender's doing, not ours: one line (a 4xx), no traceback, no 5xx alert.
        metrics.refuse(RefusalReason.CLIENT_DISCONNECTED)
        raise ApiError(400, "connection lost before the whole body arrived") from None
    if settings.webhook_secrets:
        try:
            verify_sender(settings.webhook_secrets, body, request.headers, time.time())
        except ApiError:
            metrics.refuse(RefusalReason.BAD_SIGNATURE)
            raise
    if not body:
        metrics.refuse(RefusalReason.EMPTY_BODY)
        raise ApiError(400, "empty body: expected a ticket (header lines, a blank line, then CSV)")
    delivery_id, received_at = new_delivery_id()
    return IncomingTicket(id=delivery_id, received_at=received_at, content_type=content_type, body=body)


async def _store(app: web.Application, ticket: IncomingTicket, reservation: Reservation) -> None:
    """Wait until the ticket is committed or spooled, or raise the ApiError that says why not."""
    metrics = app[METRICS]
    try:
        await app[INGEST].submit(ticket, on_settled=reservation.release)
    except Overloaded:
        metrics.refuse(RefusalReason.OVERLOADED)
        raise ApiError(503, OVERLOADED_MESSAGE, retry_after=RETRY_AFTER_OVERLOADED) from None
    except ShuttingDown:
        metrics.refuse(RefusalReason.SHUTTING_DOWN)
        raise ApiError(503, "service is shutting down", retry_after=RETRY_AFTER_OVERLOADED) from None
    except (DatabaseUnavailable, SpoolUnavailable) as exc:
        metrics.refuse(RefusalReason.STORAGE_UNAVAILABLE)
        refused(log, logging.WARNING, "ticket not stored", "ticket %s not stored: %s", ticket.id, exc, ticket_id=ticket.id)
        raise ApiError(503, "storage unavailable, ticket not stored", retry_after=RETRY_AFTER_UNAVAILABLE) from None
    except Exception:
        # Its batch was split until this ticket alone failed: the middleware answers 500
        # and logs the error with the ticket id; the rest of the batch was stored.
        metrics.refuse(RefusalReason.STORE_FAILED)
        raise


async def expect_ticket(request: web.Request) -> web.Response | None:
    """`Expect: 100-continue` on POST /ticket: answer before the sender sends its body.

    A declared body over the limit gets its 413 now, and a declared body the memory
    bound cannot take now gets 503, instead of `100 Continue` and a body read for
    nothing. Otherwise `100 Continue`, and the handler reads (and reserves) as usual.
    Answers given here bypass the middlewares, so they are counted here.
    """
    expect = request.headers.get("Expect", "")
    if request.version != HttpVersion11:
        return None
    if expect.lower() != "100-continue":
        return _early_answer(request, 417, f"unsupported Expect header '{printable(expect, 40)}'", None)
    settings = request.app[SETTINGS]
    declared = request.content_length
    if declared is not None and declared > settings.max_body_bytes:
        return _early_answer(
            request, 413, f"body of {declared} bytes is over the limit of {settings.max_body_bytes} bytes",
            RefusalReason.TOO_LARGE,
        )
    if declared is not None and not request.app[BODY_BUDGET].fits(declared):
        return _early_answer(request, 503, BYTES_OVERLOADED_MESSAGE, RefusalReason.OVERLOADED, RETRY_AFTER_OVERLOADED)
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0  # the interim answer is not part of the response's size
    return None


def _early_answer(
    request: web.Request, status: int, message: str, reason: RefusalReason | None, retry_after: int | None = None
) -> web.Response:
    """A JSON refusal sent instead of `100 Continue`; the connection is closed after it,
    as the body the sender holds back cannot be told apart from a next request."""
    metrics = request.app[METRICS]
    if reason is not None:
        metrics.refuse(reason)
    metrics.observe_request(route="/ticket", method=request.method, status=status, seconds=0.0)
    refused(log, logging.INFO, f"POST /ticket {status} before its body", "POST /ticket refused before its body (%d): %s", status, message)
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    response = web.json_response({"error": message}, status=status, headers=headers)
    response.force_close()
    return response


class BodyBudgetExhausted(Exception):
    """The bytes of bodies being read or waiting for storage are at their bound."""


async def read_body_within(
    request: web.Request, limit: int, timeout_seconds: float, reservation: Reservation | None = None
) -> bytes:
    """The whole body, or 413 as soon as it is known to exceed `limit` bytes, or
    TimeoutError when it has not arrived within `timeout_seconds`, or BodyBudgetExhausted
    when `reservation` cannot hold its bytes.

    A declared Content-Length over the limit is refused before reading anything, and a
    declared length is reserved whole before reading; a chunked body is reserved chunk
    by chunk as it arrives, and read at most one chunk past the limit. A body that
    arrived with the request head (the usual small ticket) is taken as is, without
    arming a timer.
    """
    declared = request.content_length
    if declared is not None and declared > limit:
        raise ApiError(413, f"body of {declared} bytes is over the limit of {limit} bytes")
    if reservation is not None and declared is not None and not reservation.grow(declared):
        raise BodyBudgetExhausted()
    chunk_reservation = reservation if declared is None else None
    content = request.content
    if content.is_eof():
        body = content.read_nowait()
        if chunk_reservation is not None and not chunk_reservation.grow(len(body)):
            raise BodyBudgetExhausted()
    else:
        async with asyncio.timeout(timeout_seconds):
            body = await _read_to_end(content, limit, chunk_reservation)
    if len(body) > limit:
        raise ApiError(413, f"body is over the limit of {limit} bytes")
    return body


async def _read_to_end(content: StreamReader, limit: int, reservation: Reservation | None) -> bytes:
    """Chunks until the end of the body, stopping once past `limit` bytes; each chunk is
    reserved in `reservation` (when given) before it is kept."""
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = await content.readany()
        if not chunk:
            break
        if reservation is not None and not reservation.grow(len(chunk)):
            raise BodyBudgetExhausted()
        size += len(chunk)
        chunks.append(chunk)
    return b"".join(chunks)


# The longest Content-Type kept with a ticket: real ones are a few dozen characters.
MAX_CONTENT_TYPE_LENGTH = 255


def content_type_to_store(value: str | None) -> str | None:
    """The Content-Type stored with the ticket, or 400 naming the header.

    Only printable ASCII (as HTTP defines media types), at most 255 characters: a header
    with other bytes reaches us as a str the database driver cannot encode, and would
    fail the whole group-commit batch it is in, not only its own ticket.
    """
    if value is None:
        return None
    if len(value) > MAX_CONTENT_TYPE_LENGTH:
        raise ApiError(400, f"Content-Type header is longer than {MAX_CONTENT_TYPE_LENGTH} characters")
    if not all(" " <= character <= "~" for character in value):
        raise ApiError(400, f"Content-Type header must be printable ASCII, got '{printable(value, 40)}'")
    return value
