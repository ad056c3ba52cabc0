"""How records become query parameters, and rows become records: no I/O.

Batches go to PostgreSQL as one JSON array of records keyed by column name, with money
as strings (never a float) and digests in hex; bytea comes back as memoryview and is
made bytes here.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson

from ..core.domain import (
    ArchivedTicket, ClaimedTicket, IncomingTicket, ProductSighting, TicketOutcome, field_names, from_row,
)
from ..core.ids import day_start, received_at_of
from ..core.parser import TicketLine
from ..core.processing import body_lines

Row = dict[str, Any]

# The outcome fields written as they are; money and the digest are converted first.
_OUTCOME_FIELDS = field_names(TicketOutcome)
# Where the first page of a day starts: before every key of the day.
NIL_ID = "00000000-0000-0000-0000-000000000000"


def json_text(rows: list[Row]) -> str:
    """Rows as one JSON text parameter. orjson, because the standard encoder was a sixth
    of the worker's CPU; decoded to str, as psycopg2 would send bytes as bytea. orjson
    writes a datetime itself, in RFC 3339 with its offset (what timestamptz reads): rows
    carry datetimes as they are, not isoformat() strings made one by one in Python."""
    return orjson.dumps(rows).decode()


def array_literal(values: Iterable[str | None]) -> str:
    """Text values as one PostgreSQL array literal (`{"a","b",NULL}`), which the
    statement casts to its array type: psycopg2 then adapts one string instead of an
    ARRAY[...] of one literal per value, cheaper for the driver and for the server's
    parser. Every element is quoted, with backslash and double quote escaped."""
    return "{" + ",".join(
        "NULL" if value is None else '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"' for value in values
    ) + "}"


def plain_array_literal(values: Iterable[str]) -> str:
    """Values that need no quoting in an array literal (uuids, timestamps in ISO 8601
    without spaces, integers) as one: `{a,b}`."""
    return "{" + ",".join(values) + "}"


def ticket_batch(tickets: Sequence[IncomingTicket]) -> dict[str, str]:
    """A batch's columns as `insert_tickets` reads them, each one array literal: the
    bodies as hex (what psycopg2 would have sent for each), the reception times in ISO
    8601, and each body's line count (`body_lines`)."""
    return {
        "ids": plain_array_literal(ticket.id for ticket in tickets),
        "received_at": plain_array_literal(ticket.received_at.isoformat() for ticket in tickets),
        "content_types": array_literal(ticket.content_type for ticket in tickets),
        # In the literal a bytea element is "\\x<hex>": array quoting takes one backslash.
        "bodies": "{" + ",".join('"\\\\x' + ticket.body.hex() + '"' for ticket in tickets) + "}",
        "body_lines": plain_array_literal(str(body_lines(ticket.body)) for ticket in tickets),
    }


def money(amount: Decimal | None) -> str | None:
    """Decimal as a JSON string, so no float ever carries money."""
    return None if amount is None else str(amount)


def _hex(digest: bytes | None) -> str | None:
    return digest.hex() if digest is not None else None


def received_at_hint(ticket_id: str | None) -> datetime | None:
    """The reception time a UUIDv7 id carries, which takes a query straight to the
    ticket's day partition (None for another id: every day is searched)."""
    return None if ticket_id is None else received_at_of(uuid.UUID(ticket_id))


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """The instants a UTC day's partitions hold: from its midnight to the next."""
    lower = day_start(day)
    return lower, lower + timedelta(days=1)


def claimed_ticket(row: Row) -> ClaimedTicket:
    return ClaimedTicket(
        id=row["id"], received_at=row["received_at"], body=bytes(row["body"]), crashes=row["crashes"]
    )


def line_rows(lines: Sequence[tuple[str, TicketLine]], received_at: dict[str, datetime]) -> list[Row]:
    """Lines as `insert_ticket_lines` reads them, each with its ticket's id and
    reception time (its partition)."""
    return [
        {
            "ticket_id": ticket_id,
            "received_at": received_at[ticket_id],
            "line_number": line.line_number,
            "product_id": line.product_id,
            "name": line.name,
            "price": str(line.price),
        }
        for ticket_id, line in lines
    ]


def product_rows(products: Sequence[ProductSighting]) -> list[Row]:
    """Catalogue sightings as `upsert_products` reads them."""
    return [
        {
            "product_id": product.product_id,
            "name": product.name,
            "price": str(product.price),
            "first_seen_at": product.first_seen_at,
            "last_seen_at": product.last_seen_at,
            "last_ticket_id": product.last_ticket_id,
            "times_seen": product.times_seen,
        }
        for product in products
    ]


def outcome_row(outcome: TicketOutcome, received_at: datetime) -> Row:
    """An outcome as `record_outcomes` reads it: every field under its column's name,
    with its ticket's reception time (its partition), money as strings (never a float),
    the digest in hex, warnings as a list."""
    row = {name: getattr(outcome, name) for name in _OUTCOME_FIELDS}
    row["received_at"] = received_at
    row["vat"] = money(outcome.vat)
    row["total"] = money(outcome.total)
    row["warnings"] = list(outcome.warnings)
    row["body_sha256"] = _hex(outcome.body_sha256)
    return row


def archived_ticket(row: Row, lines: Sequence[TicketLine]) -> ArchivedTicket:
    """A page row as its record: bytes for bytea, a tuple for the warnings."""
    row = dict(row)
    row["body"] = bytes(row["body"])
    row["body_sha256"] = bytes(row["body_sha256"]) if row["body_sha256"] is not None else None
    row["warnings"] = tuple(row["warnings"])
    return from_row(ArchivedTicket, {**row, "lines": tuple(lines)})


def lines_by_ticket(rows: list[Row]) -> dict[str, list[TicketLine]]:
    """`archive_page_lines` rows grouped by their ticket's id, in the order read."""
    lines: dict[str, list[TicketLine]] = {}
    for row in rows:
        row = dict(row)
        lines.setdefault(row.pop("ticket_id"), []).append(from_row(TicketLine, row))
    return lines


def restore_record(ticket: ArchivedTicket) -> str:
    """Everything of an archived ticket but its body, as `restore_tickets` reads it:
    money as strings (never a float), the digest in hex."""
    record = {
        "id": ticket.id,
        "received_at": ticket.received_at.isoformat(),
        "content_type": ticket.content_type,
        "status": ticket.status,
        "processed_at": ticket.processed_at.isoformat() if ticket.processed_at is not None else None,
        "attempts": ticket.attempts,
        "order_ref": ticket.order_ref,
        "vat": money(ticket.vat),
        "total": money(ticket.total),
        "headers": ticket.headers,
        "warnings": list(ticket.warnings),
        "error": ticket.error,
        "text_encoding": ticket.text_encoding,
        "body_sha256": _hex(ticket.body_sha256),
        "duplicate_of": ticket.duplicate_of,
        "lines": [
            {"line_number": line.line_number, "product_id": line.product_id, "name": line.name,
             "price": str(line.price)}
            for line in ticket.lines
        ],
    }
    return orjson.dumps(record).decode()
