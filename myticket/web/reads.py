"""The read routes: tickets found by filters, a ticket with one page of its lines, its
raw body, the catalogue page by page, one product; and the JSON shape of each (money as
strings, times in ISO 8601)."""

from __future__ import annotations

import dataclasses
import functools
import json
import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from aiohttp import web

from ..core.domain import Product, TicketRecord, field_names
from ..core.parser import TicketLine
from ..core.ticket_search import (
    STATUSES,
    SearchError,
    TicketSearch,
    TicketSummary,
    before_cursor,
    decode_cursor,
    encode_cursor,
    parse_instant,
    parse_statuses,
    search_window,
)
from .errors import ApiError
from .replica import READ_REPOSITORY


def _json_value(value: Any) -> Any:
    """Money as a string ("14.90", never a float), times as ISO 8601."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


json_dumps = functools.partial(json.dumps, default=_json_value, ensure_ascii=False)


# Lines one GET /tickets/{id} returns: at most MAX_LINES_PAGE, DEFAULT_LINES_PAGE unless asked.
MAX_LINES_PAGE = 1000
DEFAULT_LINES_PAGE = 100


def ascii_integer(text: str) -> int | None:
    """`text` as a whole number written with ASCII digits (and an optional sign), else
    None: Python's int() also takes `1_0` and other scripts' digits, which no client means."""
    digits = text[1:] if text[:1] in "+-" else text
    return int(text) if digits.isascii() and digits.isdigit() else None


def query_integer(request: web.Request, name: str, default: int, *, minimum: int, maximum: int | None = None) -> int:
    """An integer query parameter within bounds (absent: `default`), or 400 naming it.
    A parameter given empty is a 400 like any other value that is not an integer, as the
    OpenAPI document declares it an integer."""
    if name not in request.query:
        return default
    raw = request.query[name].strip()
    value = ascii_integer(raw)
    if value is None:
        raise ApiError(400, f"{name} {raw!r} is not an integer") from None
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise ApiError(400, f"{name} must be {bounds}, got {value}")
    return value


def ticket_id_of(request: web.Request) -> str:
    """The route's ticket id in canonical form; 404 for what cannot be an id."""
    raw_id = request.match_info["ticket_id"]
    try:
        return str(uuid.UUID(raw_id))
    except ValueError:
        raise ApiError(404, f"no ticket {raw_id}") from None


def ticket_search(
    request: web.Request, *, statuses: tuple[str, ...] = STATUSES, default: tuple[str, ...] | None = None
) -> TicketSearch:
    """The filters of GET /tickets (and of a bulk requeue) from the query string, or 400
    naming the one that cannot be used. `statuses`: those allowed; `default`: those
    chosen when none is asked (all allowed ones unless given)."""
    query = request.query
    try:
        chosen = parse_statuses(query.getall("status", []), statuses, default)
        since = parse_instant("since", query["since"]) if query.get("since") else None
        until = parse_instant("until", query["until"]) if query.get("until") else None
        since, until = search_window(since, until, datetime.now(timezone.utc))
    except SearchError as exc:
        raise ApiError(400, str(exc)) from None
    return TicketSearch(
        statuses=chosen, since=since, until=until,
        order_ref=query.get("order_ref") or None, product_id=query.get("product_id") or None,
    )


def summary_json(ticket: TicketSummary) -> dict[str, Any]:
    return {name: getattr(ticket, name) for name in field_names(TicketSummary)}


async def list_tickets(request: web.Request) -> web.Response:
    """Tickets newest first, filtered by `status` (one or several), `since`/`until`
    (reception time, ISO 8601; the last 24 hours by default), `order_ref`, `product_id`;
    `?limit=` (1-1000, default 100) per page, `?after=` the previous page's next_after."""
    search = ticket_search(request)
    limit = query_integer(request, "limit", DEFAULT_PAGE_SIZE, minimum=1, maximum=MAX_PAGE_SIZE)
    after = None
    if request.query.get("after"):
        try:
            after = decode_cursor(request.query["after"])
        except SearchError as exc:
            raise ApiError(400, str(exc)) from None
        search = dataclasses.replace(search, until=before_cursor(search.until, after))
    tickets, next_after = await request.app[READ_REPOSITORY].find_tickets(search=search, after=after, limit=limit)
    return web.json_response(
        {
            "tickets": [summary_json(ticket) for ticket in tickets],
            "next_after": encode_cursor(*next_after) if next_after is not None else None,
        },
        dumps=json_dumps,
    )


# What a stored body is served as when it was received without a Content-Type.
DEFAULT_BODY_TYPE = "application/octet-stream"


async def get_ticket_body(request: web.Request) -> web.Response:
    """The exact bytes received for a ticket, with the Content-Type they came with."""
    ticket_id = ticket_id_of(request)
    found = await request.app[READ_REPOSITORY].ticket_body(ticket_id=ticket_id)
    if found is None:
        raise ApiError(404, f"no ticket {ticket_id}")
    body, content_type = found
    # Set as a header, not through content_type=: aiohttp would parse and rebuild it.
    return web.Response(
        body=body, headers={"Content-Type": content_type or DEFAULT_BODY_TYPE, "X-Content-Type-Options": "nosniff"}
    )


async def get_ticket(request: web.Request) -> web.Response:
    """A ticket's status, error, warnings, parsed header and one page of its lines:
    `?lines_limit=` (1-1000, default 100) lines numbered after `?lines_after=` (default 0).
    Paged so that one read of a ticket of 100,000 lines never blocks intake."""
    ticket_id = ticket_id_of(request)
    lines_after = query_integer(request, "lines_after", 0, minimum=0, maximum=2**31 - 1)
    lines_limit = query_integer(request, "lines_limit", DEFAULT_LINES_PAGE, minimum=1, maximum=MAX_LINES_PAGE)
    repository = request.app[READ_REPOSITORY]
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


# Products one GET /products returns: at most MAX_PAGE_SIZE, DEFAULT_PAGE_SIZE unless asked.
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100


async def list_products(request: web.Request) -> web.Response:
    """The catalogue ordered by product_id: `?limit=` (1-1000, default 100) and `?after=<product_id>`."""
    limit = query_integer(request, "limit", DEFAULT_PAGE_SIZE, minimum=1, maximum=MAX_PAGE_SIZE)
    after = request.query.get("after") or None
    products, next_after = await request.app[READ_REPOSITORY].products(limit=limit, after=after)
    return web.json_response(
        {"products": [product_json(product) for product in products], "next_after": next_after}, dumps=json_dumps
    )


async def get_product(request: web.Request) -> web.Response:
    product_id = request.match_info["product_id"]
    product = await request.app[READ_REPOSITORY].product(product_id=product_id)
    if product is None:
        raise ApiError(404, f"no product {product_id}")
    return web.json_response(product_json(product), dumps=json_dumps)
