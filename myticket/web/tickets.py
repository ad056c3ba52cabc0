"""POST /ticket: take the body within the size limit, the read timeout and the byte
budget, check who sent it, hand it to group commit, and answer once it is stored."""

from __future__ import annotations

import asyncio
import functools
import logging
import time

from aiohttp import HttpVersion11, StreamReader, web

from ..core.database_errors import DatabaseUnavailable
from ..core.domain import IncomingTicket
from ..core.ids import new_delivery_id
from ..core.senders import sender_key
from ..intake.budget import Reservation
from ..intake.group_commit import Overloaded, SenderOverShare, ShuttingDown
from ..intake.shares import Shortage
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
# Refusals of one sender past its share (MYTICKET_SENDER_SHARE_PERCENT): only it gets them.
SENDER_BYTES_MESSAGE = "this sender holds its share of the body bytes in memory; retry later"
SENDER_WAITING_MESSAGE = "this sender has its share of the tickets waiting for storage; retry later"
# The grace a body has before MYTICKET_MIN_BODY_BYTES_PER_SECOND applies: a sender's
# first bytes may take a round trip or a slow start, not a ticket's whole time.
BODY_GRACE_SECONDS = 5.0


def request_sender(request: web.Request) -> str:
    """Who sent this request (see myticket.core.senders): its connection's address, or,
    from a trusted proxy only, the last hop of X-Forwarded-For."""
    forwarded_for = request.headers.getall("X-Forwarded-For", ())
    if not forwarded_for:
        return _peer_sender(request.remote)
    return sender_key(request.remote, forwarded_for, request.app[SETTINGS].trusted_proxies)


@functools.lru_cache(maxsize=4096)
def _peer_sender(peer: str | None) -> str:
    """The sender of a request without X-Forwarded-For: its peer's address, normalised.
    Remembered per peer, as parsing the address was a twentieth of the request's CPU."""
    return sender_key(peer, (), ())


async def post_ticket(request: web.Request) -> web.Response:
    """Store the exact body durably, then answer 202 with its delivery id.

    The body's bytes are reserved in the app's byte budget, in its sender's share, as
    they are read and until the ticket is stored or refused, whatever ends the request.
    """
    app = request.app
    key = request_key(request)  # None without an Idempotency-Key or webhook-id: no statement of its own
    sender = request_sender(request)
    reservation = app[BODY_BUDGET].reservation(sender)
    handed_over = False
    try:
        ticket = await _admissible_ticket(request, reservation)
        request[TICKET_ID] = ticket.id
        if key is not None:
            ticket, replay = await with_key(request, key, ticket)
            if replay is not None:
                return replay
        handed_over = True  # from here `submit` releases the reservation, even if this wait is cancelled
        await _store(app, ticket, reservation, sender)
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
        body = await read_body_within(
            request, settings.max_body_bytes, settings.read_timeout_seconds, reservation,
            min_bytes_per_second=settings.min_body_bytes_per_second,
        )
    except ApiError:
        metrics.refuse(RefusalReason.TOO_LARGE)
        raise
    except BodyBudgetExhausted:
        if reservation.shortage is Shortage.SENDER_SHARE:
            raise _sender_over_share(request, SENDER_BYTES_MESSAGE) from None
        metrics.refuse(RefusalReason.OVERLOADED)
        refused(log, logging.INFO, "POST /ticket bytes overloaded", "POST /ticket refused: the bytes of bodies in memory are at MYTICKET_MAX_PENDING_BYTES")
        raise ApiError(503, BYTES_OVERLOADED_MESSAGE, retry_after=RETRY_AFTER_OVERLOADED) from None
    except BodyTooSlow as slow:
        metrics.refuse(RefusalReason.BODY_TOO_SLOW)
        raise ApiError(408, str(slow)) from None
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


def _sender_over_share(request: web.Request, message: str) -> ApiError:
    """429 for a sender past its share, counted (the error middleware logs it, at most
    one line a second for all such refusals)."""
    request.app[METRICS].refuse(RefusalReason.SENDER_SHARE)
    return ApiError(429, message, retry_after=RETRY_AFTER_OVERLOADED)


async def _store(app: web.Application, ticket: IncomingTicket, reservation: Reservation, sender: str) -> None:
    """Wait until the ticket is committed or spooled, or raise the ApiError that says why not."""
    metrics = app[METRICS]
    try:
        await app[INGEST].submit(ticket, sender=sender, on_settled=reservation.release)
    except SenderOverShare:
        metrics.refuse(RefusalReason.SENDER_SHARE)
        raise ApiError(429, SENDER_WAITING_MESSAGE, retry_after=RETRY_AFTER_OVERLOADED) from None
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
    shortage = request.app[BODY_BUDGET].shortage(declared or 0, request_sender(request))
    if shortage is Shortage.SENDER_SHARE:
        return _early_answer(request, 429, SENDER_BYTES_MESSAGE, RefusalReason.SENDER_SHARE, RETRY_AFTER_OVERLOADED)
    if shortage is not None:
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
    """The bytes of bodies being read or waiting for storage are at their bound, or the
    sender's share of them (the reservation's `shortage` says which)."""


class BodyTooSlow(Exception):
    """The body arrives slower than the minimum rate: the message says how slow."""


async def read_body_within(
    request: web.Request, limit: int, timeout_seconds: float, reservation: Reservation | None = None, *,
    min_bytes_per_second: int = 0,
) -> bytes:
    """The whole body, or 413 as soon as it is known to exceed `limit` bytes, or
    TimeoutError when it has not arrived within `timeout_seconds`, or BodyTooSlow when,
    after BODY_GRACE_SECONDS, less than `min_bytes_per_second` per second has arrived,
    or BodyBudgetExhausted when `reservation` cannot hold its bytes.

    A declared Content-Length over the limit is refused before reading anything. Bytes
    are reserved as they arrive, never from a declared length: a sender that declares
    1 MiB and sends nothing holds no part of the budget, and is cut off by the rate.
    The body is read at most one chunk past the limit. A body that arrived with the
    request head (the usual small ticket) is taken as is, without arming a timer.
    """
    declared = request.content_length
    if declared is not None and declared > limit:
        raise ApiError(413, f"body of {declared} bytes is over the limit of {limit} bytes")
    content = request.content
    if content.is_eof():
        body = content.read_nowait()
        if reservation is not None and not reservation.grow(len(body)):
            raise BodyBudgetExhausted()
    else:
        async with asyncio.timeout(timeout_seconds):
            body = await _read_to_end(content, limit, reservation, min_bytes_per_second)
    if len(body) > limit:
        raise ApiError(413, f"body is over the limit of {limit} bytes")
    return body


def rate_deadline(started: float, received: int, min_bytes_per_second: int) -> float | None:
    """When a body that started arriving at `started` and has `received` bytes so far
    falls below the minimum rate if nothing more arrives (None: no minimum rate).

    The rule: `received` must stay at least min_rate × (elapsed − grace), so each byte
    buys 1/min_rate second past the grace."""
    if min_bytes_per_second <= 0:
        return None
    return started + BODY_GRACE_SECONDS + received / min_bytes_per_second


async def _read_to_end(
    content: StreamReader, limit: int, reservation: Reservation | None, min_bytes_per_second: int
) -> bytes:
    """Chunks until the end of the body, stopping once past `limit` bytes; each chunk is
    reserved in `reservation` (when given) before it is kept. Each wait for a chunk
    ends at the moment the body would fall below the minimum rate."""
    chunks: list[bytes] = []
    size = 0
    loop = asyncio.get_running_loop()
    started = loop.time()
    while size <= limit:
        deadline = rate_deadline(started, size, min_bytes_per_second)
        try:
            async with asyncio.timeout_at(deadline):
                chunk = await content.readany()
        except TimeoutError:
            if deadline is None or loop.time() < deadline:
                raise  # the outer deadline (the read timeout), not the rate
            elapsed = loop.time() - started
            raise BodyTooSlow(
                f"body arriving slower than {min_bytes_per_second} bytes per second "
                f"({size} bytes in {elapsed:.0f} seconds)"
            ) from None
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
    if not (value.isascii() and value.isprintable()):  # printable ASCII: " " to "~"
        raise ApiError(400, f"Content-Type header must be printable ASCII, got '{printable(value, 40)}'")
    return value
