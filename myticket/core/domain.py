"""The service's records, with no I/O: what is received, claimed, decided and read.

Rows from PostgreSQL are mapped into these once, by column name (`from_row`): each
query names its columns after the fields (`AS received_at`), so reordering a SELECT
changes nothing and a renamed column fails at once instead of swapping values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from .parser import TicketLine

Record = TypeVar("Record")


def from_row(cls: type[Record], row: Mapping[str, Any]) -> Record:
    """`cls` built from a row keyed by column name; a column the record does not have,
    or a field the row lacks, is a TypeError (a query and its record disagree)."""
    return cls(**row)


def field_names(cls: type) -> tuple[str, ...]:
    return tuple(field.name for field in fields(cls))


@dataclass(frozen=True, slots=True)
class IncomingTicket:
    """One delivery as received: what POST /ticket stores before acknowledging."""

    id: str
    received_at: datetime
    content_type: str | None
    body: bytes
    # The Idempotency-Key (or webhook-id) to note with the ticket when it is stored in
    # PostgreSQL, with the digest of its body; not kept by the spool.
    idempotency_key: str | None = None
    body_sha256: bytes | None = None


@dataclass(frozen=True, slots=True)
class ClaimedTicket:
    """A pending ticket locked by a worker's transaction. `crashes`: how many times a
    worker died processing it alone (see the journal of claims, migration 0006)."""

    id: str
    received_at: datetime
    body: bytes
    crashes: int = 0


@dataclass(slots=True)
class TicketOutcome:
    """What processing decided for one ticket: processed, rejected or duplicate.

    Its fields are the `ticket_outcomes` columns it sets, by the same names, so that
    writing it maps each value by name (`record_outcomes`)."""

    id: str
    status: str
    body_sha256: bytes | None = None
    order_ref: str | None = None
    vat: Decimal | None = None
    total: Decimal | None = None
    headers: dict[str, str] | None = None
    warnings: Sequence[str] = ()
    error: str | None = None
    text_encoding: str | None = None
    duplicate_of: str | None = None


@dataclass(slots=True)
class ProductSighting:
    """One batch's view of a product: merged into the catalogue by upsert_products."""

    product_id: str
    name: str
    price: Decimal
    first_seen_at: datetime
    last_seen_at: datetime
    # The id of the ticket that gave name and price: breaks ties between equal last_seen_at.
    last_ticket_id: str
    times_seen: int = 1


@dataclass(frozen=True, slots=True)
class FailedAttempt:
    """A ticket's state after one failed processing attempt was charged to it."""

    status: str
    received_at: datetime


@dataclass(frozen=True, slots=True)
class RequeueCandidate:
    """A ticket `myticket reprocess` would put back to pending."""

    id: str
    status: str
    received_at: datetime
    error: str | None


@dataclass(frozen=True, slots=True)
class TicketRecord:
    """A stored ticket as GET /tickets/{id} reads it (its lines come by pages)."""

    id: str
    status: str
    received_at: datetime
    content_type: str | None
    body_bytes: int
    processed_at: datetime | None
    order_ref: str | None
    vat: Decimal | None
    total: Decimal | None
    headers: dict[str, str] | None
    warnings: Sequence[str]
    error: str | None
    text_encoding: str | None
    duplicate_of: str | None
    attempts: int
    line_count: int


@dataclass(frozen=True, slots=True)
class Product:
    """One entry of the catalogue."""

    product_id: str
    name: str
    price: Decimal
    first_seen_at: datetime
    last_seen_at: datetime
    times_seen: int


@dataclass(frozen=True)
class DatabaseIdentity:
    """Which PostgreSQL database this is: the cluster's system identifier (from
    pg_control_system(), unique per initdb) and the database's name."""

    system_identifier: str
    database_name: str

    def __str__(self) -> str:
        return f"database {self.database_name!r} of PostgreSQL system {self.system_identifier}"


@dataclass(frozen=True, slots=True)
class ArchivedTicket:
    """Everything kept of one ticket in an archive file, and restored from it: the
    delivery as received, its status, and the outcome and lines when it has them."""

    id: str
    received_at: datetime
    content_type: str | None
    body: bytes
    status: str
    processed_at: datetime | None = None
    attempts: int = 0
    order_ref: str | None = None
    vat: Decimal | None = None
    total: Decimal | None = None
    headers: dict[str, str] | None = None
    warnings: Sequence[str] = ()
    error: str | None = None
    text_encoding: str | None = None
    body_sha256: bytes | None = None
    duplicate_of: str | None = None
    lines: Sequence[TicketLine] = ()


@dataclass(frozen=True, slots=True)
class ArchivedDayNote:
    """What archive noted of a day in `archived_days`: the file purge must find intact."""

    day: date
    tickets: int
    pending: int
    file_name: str
    sha256: str
    directory: str
