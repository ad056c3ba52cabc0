"""HTTP handlers. They stay thin: read the request, call ingest or the repository, answer."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import uuid
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from aiohttp import HttpVersion11, StreamReader, web

from ..intake.budget import Reservation
from ..core.database_errors import DatabaseUnavailable
from ..core.domain import IncomingTicket, Product, TicketRecord, field_names
from ..core.ids import new_delivery_id
from ..intake.group_commit import Overloaded, ShuttingDown
from ..telemetry.metrics import RefusalReason
from ..core.parser import TicketLine
from ..core.readiness import readiness
from ..intake.spool import SpoolUnavailable
from .auth import verify_signature
from .errors import RETRY_AFTER_OVERLOADED, RETRY_AFTER_UNAVAILABLE, ApiError
from .text import printable
from .typedefs import BODY_BUDGET, EXPECTED_MIGRATIONS, INGEST, METRICS, REPOSITORY, SETTINGS, STORE, TICKET_ID

log = logging.getLogger(__name__)

def setup_routes(app: web.Application) -> None:
    app.router.add_get("/ping", ping)
    app.router.add_get("/ready", ready)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/ticket", post_ticket, expect_handler=expect_ticket)
    app.router.add_get("/tickets/{ticket_id}", get_ticket)
    app.router.add_get("/products", list_products)
    app.router.add_get("/products/{product_id}", get_product)


def _json_value(value: Any) -> Any:
    """Money as a string ("14.90", never a float), times as ISO 8601."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


json_dumps = functools.partial(json.dumps, default=_json_value, ensure_ascii=False)


async def ping(request: web.Request) -> web.Response:
    """Liveness: answers without touching the database."""
    return web.Response(text="pong")


async def ready(request: web.Request) -> web.Response:
    """Readiness: tickets can be stored durably now.

    200 `ready` when the database answers and every shipped migration is applied;
    200 `spooling` when the database does not answer (or is not confirmed yet: it has
    not answered since the start) but the spool takes tickets (the next ticket goes to
    the spool, so `spool.mode` is true); 503 when neither can store a ticket. The
    database's failure is given as a short reason: driver text spans lines and names
    the database's host and port.
    """
    app = request.app
    store = app[STORE]
    spool_state = await store.spool_state()
    database_problem = None if store.database_confirmed.is_set() else store.database_problem or "not confirmed"
    missing: list[str] = []
    if database_problem is None:
        try:
            missing = sorted(app[EXPECTED_MIGRATIONS] - await app[REPOSITORY].applied_migrations())
        except DatabaseUnavailable as exc:
            database_problem = f"unavailable: {exc.reason}"
    status, body = readiness(
        database_problem=database_problem, missing_migrations=missing, spool=spool_state,
        spool_max_bytes=store.spool.max_bytes if store.spool is not None else 0,
    )
    if status != 200:
        raise ApiError(status, body["error"], retry_after=RETRY_AFTER_UNAVAILABLE)
    return web.json_response(body)


async def metrics(request: web.Request) -> web.Response:
    body, headers = request.app[METRICS].render(request.headers.getall("Accept", []))
    return web.Response(body=body, headers=headers)


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
    log.info("POST /ticket refused before its body (%d): %s", status, message)
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    response = web.json_response({"error": message}, status=status, headers=headers)
    response.force_close()
    return response


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


OVERLOADED_MESSAGE = "too many tickets waiting for storage"
# The same refusal when it is the bytes of bodies in memory that are at their bound.
BYTES_OVERLOADED_MESSAGE = "too many body bytes waiting for storage (MYTICKET_MAX_PENDING_BYTES)"


async def post_ticket(request: web.Request) -> web.Response:
    """Store the exact body durably, then answer 202 with its delivery id.

    The body's bytes are reserved in the app's byte budget from before they are read
    until the ticket is stored or refused, whatever ends the request.
    """
    app = request.app
    reservation = app[BODY_BUDGET].reservation()
    handed_over = False
    try:
        ticket = await _admissible_ticket(request, reservation)
        request[TICKET_ID] = ticket.id
        handed_over = True  # from here `submit` releases the reservation, even if this wait is cancelled
        await _store(app, ticket, reservation)
    finally:
        if not handed_over:
            reservation.release()
    app[METRICS].accept()
    log.debug("ticket %s stored (%d bytes)", ticket.id, len(ticket.body))
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
        log.info("POST /ticket refused: %s", exc.message)
        raise
    try:
        body = await read_body_within(request, settings.max_body_bytes, settings.read_timeout_seconds, reservation)
    except ApiError:
        metrics.refuse(RefusalReason.TOO_LARGE)
        raise
    except BodyBudgetExhausted:
        metrics.refuse(RefusalReason.OVERLOADED)
        log.info("POST /ticket refused: the bytes of bodies in memory are at MYTICKET_MAX_PENDING_BYTES")
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
            verify_signature(settings.webhook_secrets, body, request.headers.get("X-Signature"))
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
        log.warning("ticket %s not stored: %s", ticket.id, exc)
        raise ApiError(503, "storage unavailable, ticket not stored", retry_after=RETRY_AFTER_UNAVAILABLE) from None
    except Exception:
        # Its batch was split until this ticket alone failed: the middleware answers 500
        # and logs the error with the ticket id; the rest of the batch was stored.
        metrics.refuse(RefusalReason.STORE_FAILED)
        raise


# Lines one GET /tickets/{id} returns: at most MAX_LINES_PAGE, DEFAULT_LINES_PAGE unless asked.
MAX_LINES_PAGE = 1000
DEFAULT_LINES_PAGE = 100


def ascii_integer(text: str) -> int | None:
    """`text` as a whole number written with ASCII digits (and an optional sign), else
    None: Python's int() also takes `1_0` and other scripts' digits, which no client means."""
    digits = text[1:] if text[:1] in "+-" else text
    return int(text) if digits.isascii() and digits.isdigit() else None


def query_integer(request: web.Request, name: str, default: int, *, minimum: int, maximum: int | None = None) -> int:
    """An integer query parameter within bounds, or 400 naming it."""
    raw = request.query.get(name, "").strip()
    if not raw:
        return default
    value = ascii_integer(raw)
    if value is None:
        raise ApiError(400, f"{name} {raw!r} is not an integer") from None
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise ApiError(400, f"{name} must be {bounds}, got {value}")
    return value


async def get_ticket(request: web.Request) -> web.Response:
    """A ticket's status, error, warnings, parsed header and one page of its lines:
    `?lines_limit=` (1-1000, default 100) lines numbered after `?lines_after=` (default 0).
    Paged so that one read of a ticket of 100,000 lines never blocks intake."""
    raw_id = request.match_info["ticket_id"]
    try:
        ticket_id = str(uuid.UUID(raw_id))
    except ValueError:
        raise ApiError(404, f"no ticket {raw_id}") from None
    lines_after = query_integer(request, "lines_after", 0, minimum=0, maximum=2**31 - 1)
    lines_limit = query_integer(request, "lines_limit", DEFAULT_LINES_PAGE, minimum=1, maximum=MAX_LINES_PAGE)
    repository = request.app[REPOSITORY]
    ticket = await repository.ticket(ticket_id=ticket_id)
    if ticket is None:
        raise ApiError(404, f"no ticket {ticket_id}")
    lines, next_lines_after = await repository.ticket_lines(ticket_id=ticket_id, after=lines_after, limit=lines_limit)
    return web.json_response(ticket_json(ticket, lines, next_lines_after), dumps=json_dumps)


def ticket_json(ticket: TicketRecord, lines: Sequence[TicketLine], next_lines_after: int | None) -> dict[str, Any]:
    """The answer of GET /tickets/{id}: the record's fields by name, one page of lines."""
    return {
        **{name: getattr(ticket, name) for name in field_names(TicketRecord)},
        "warnings": list(ticket.warnings),
        "lines": [
            {"line_number": line.line_number, "product_id": line.product_id, "name": line.name, "price": line.price}
            for line in lines
        ],
        "next_lines_after": next_lines_after,
    }


def product_json(product: Product) -> dict[str, Any]:
    return {name: getattr(product, name) for name in field_names(Product)}


MAX_PAGE_SIZE = 1000


async def list_products(request: web.Request) -> web.Response:
    """The catalogue ordered by product_id: `?limit=` (1-1000, default 100) and `?after=<product_id>`."""
    raw_limit = request.query.get("limit", "100")
    limit = ascii_integer(raw_limit.strip())
    if limit is None:
        raise ApiError(400, f"limit {raw_limit!r} is not an integer") from None
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise ApiError(400, f"limit must be between 1 and {MAX_PAGE_SIZE}")
    after = request.query.get("after") or None
    products, next_after = await request.app[REPOSITORY].products(limit=limit, after=after)
    return web.json_response(
        {"products": [product_json(product) for product in products], "next_after": next_after}, dumps=json_dumps
    )


async def get_product(request: web.Request) -> web.Response:
    product_id = request.match_info["product_id"]
    product = await request.app[REPOSITORY].product(product_id=product_id)
    if product is None:
        raise ApiError(404, f"no product {product_id}")
    return web.json_response(product_json(product), dumps=json_dumps)
