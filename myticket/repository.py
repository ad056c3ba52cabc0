"""The only module that talks SQL.

Queries live in `sql/*.sql` as named blocks (`-- name: insert_tickets`, then comment
lines that document it, then the statement) and are loaded once. Every method takes
keyword arguments and turns driver errors into the domain errors below, so callers
never see psycopg2. aiopg connections are autocommit: a single statement is its own
transaction, and multi-statement work uses `cursor.begin()`.

Driver errors are classified by SQLSTATE (`failure_kind`), not by psycopg2's class:
psycopg2 files "index row too large" (54000) under OperationalError, beside a lost
connection. Every repository method raises one of:

- `DatabaseUnavailable`: the database cannot do any work now (connection lost or
  refused, shutting down, out of disk or memory, read-only): nothing is wrong with the
  data; retry the same work later (the worker pauses, ingest spools or answers 503).
- `DatabaseConflict`, a subclass of `DatabaseUnavailable`: this attempt lost a race or
  ran out of time (serialization failure, deadlock, lock or statement timeout). The same
  work may succeed at once; callers that only know `DatabaseUnavailable` treat it so.
- `DataRejected`: PostgreSQL refused the data itself (a value out of range, a constraint,
  an index row over the size limit, ...). Retrying the same data fails again: the input
  that carried it is rejected with `reason`, and the other inputs go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiopg
import orjson
import psycopg2
import psycopg2.errorcodes

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SQL_DIR = PROJECT_ROOT / "sql"

_NAME_LINE = re.compile(r"^--\s*name:\s*(?P<name>[a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


class DatabaseUnavailable(Exception):
    """PostgreSQL could not be reached or refused the work; the caller may retry later.

    Its message is one line with the driver's detail, for logs; `reason` is a short
    class of the failure without host, port or driver wording, for answers to clients.
    """

    @property
    def reason(self) -> str:
        return classify_database_failure(self.__cause__)


class DatabaseConflict(DatabaseUnavailable):
    """This attempt lost a race or ran out of time (deadlock, serialization failure, lock
    or statement timeout): the same work may succeed if tried again now. A subclass of
    DatabaseUnavailable, so that a caller unaware of it retries later, never drops."""


class DataRejected(Exception):
    """PostgreSQL refused the data of a statement: trying the same data again fails again.

    `sqlstate` is PostgreSQL's code (e.g. 54000); `reason` names the condition and carries
    the server's message, on one line, to be stored as the rejection of the input at fault.
    """

    def __init__(self, message: str, *, sqlstate: str | None, reason: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.reason = reason


class FailureKind(enum.Enum):
    """What a database error says about the work that met it."""

    UNAVAILABLE = "unavailable"  # the database cannot work now: retry later, the data is fine
    CONFLICT = "conflict"  # this attempt lost a race or timed out: retry now, bounded
    DATA = "data"  # the data was refused: the input carrying it is rejected


# SQLSTATE classes (first two characters) of the database's state, not of our data.
_UNAVAILABLE_CLASSES = frozenset({
    "08",  # connection exception
    "28",  # invalid authorization (password changed, role dropped)
    "3D",  # invalid catalog name: the database does not exist (yet, or any more)
    "53",  # insufficient resources: disk full, out of memory, too many connections
    "57",  # operator intervention: admin or crash shutdown, cannot connect now (57014 aside)
    "58",  # system error: I/O error, file missing
    "F0",  # configuration file error
})
_UNAVAILABLE_CODES = frozenset({
    "25006",  # read-only transaction: a standby, or a primary during a failover
    "25P03",  # idle-in-transaction timeout: the server closed the session
})
_CONFLICT_CLASSES = frozenset({
    "40",  # transaction rollback: serialization failure 40001, deadlock 40P01
})
_CONFLICT_CODES = frozenset({
    "55P03",  # lock not available (lock_timeout)
    "57014",  # query canceled (statement_timeout)
})


def failure_kind(sqlstate: str | None) -> FailureKind:
    """Classify a driver error by its SQLSTATE.

    No SQLSTATE means the server never answered (a dropped connection, a refused
    connect, a timeout on our side): unavailable. Codes of the server's state are
    unavailable, races and timeouts are conflicts, and every other code (data exception
    22, integrity 23, program limit 54, and the rest) is the data's: an unknown code must
    never pause processing for everyone, so it is isolated with the input that met it.
    """
    if not sqlstate:
        return FailureKind.UNAVAILABLE
    if sqlstate in _CONFLICT_CODES or sqlstate[:2] in _CONFLICT_CLASSES:
        return FailureKind.CONFLICT
    if sqlstate in _UNAVAILABLE_CODES or sqlstate[:2] in _UNAVAILABLE_CLASSES:
        return FailureKind.UNAVAILABLE
    return FailureKind.DATA


# Substrings of driver messages (lower case), and the short reason each stands for.
_FAILURE_REASONS = (
    ("connection refused", "connection refused"),
    ("could not translate host name", "host name not found"),
    ("timeout", "timeout"),
    ("timed out", "timeout"),
    ("server closed the connection", "connection lost"),
    ("connection already closed", "connection lost"),
    ("terminating connection", "server shutting down"),
    ("database system is shutting down", "server shutting down"),
    ("database system is starting up", "server starting up"),
    ("database system is in recovery mode", "server starting up"),
    ("password authentication failed", "authentication failed"),
    ("does not exist", "database or role does not exist"),
    ("too many clients", "too many connections"),
    ("no space left", "disk full"),
    ("read-only transaction", "read-only"),
)
DATABASE_FAILURE_REASONS = frozenset(reason for _, reason in _FAILURE_REASONS)


def classify_database_failure(exc: BaseException | None) -> str:
    """A short reason for a driver error, or its type name when none is recognised."""
    if exc is None:
        return "unknown"
    if isinstance(exc, TimeoutError):
        return "timeout"
    message = str(exc).lower()
    for fragment, reason in _FAILURE_REASONS:
        if fragment in message:
            return reason
    return type(exc).__name__


# Everything the driver and the pool raise; `_database_error` tells them apart.
_DRIVER_ERRORS = (psycopg2.Error, OSError, asyncio.TimeoutError)


@dataclass(frozen=True, slots=True)
class IncomingTicket:
    """One delivery as received: what POST /ticket stores before acknowledging."""

    id: str
    received_at: datetime
    content_type: str | None
    body: bytes


@dataclass(frozen=True, slots=True)
class ClaimedTicket:
    """A pending ticket locked by a worker's transaction."""

    id: str
    seq: int
    received_at: datetime
    body: bytes


@dataclass(slots=True)
class TicketOutcome:
    """What processing decided for one ticket: processed, rejected or duplicate."""

    id: str
    status: str
    digest: bytes | None = None
    order_ref: str | None = None
    vat: Decimal | None = None
    total: Decimal | None = None
    headers: dict[str, str] | None = None
    warnings: Sequence[str] = ()
    error: str | None = None
    encoding: str | None = None
    duplicate_of: str | None = None


@dataclass(frozen=True, slots=True)
class LineRow:
    ticket_id: str
    line_number: int
    product_id: str
    name: str
    price: Decimal


@dataclass(slots=True)
class ProductSighting:
    """One batch's view of a product: merged into the catalogue by upsert_products."""

    product_id: str
    name: str
    price: Decimal
    first_seen_at: datetime
    last_seen_at: datetime
    last_ticket_seq: int
    times_seen: int = 1


@dataclass(frozen=True)
class RequeueCandidate:
    """A ticket `myticket reprocess` would put back to pending."""

    id: str
    status: str
    received_at: datetime
    error: str | None


class ClaimedBatch:
    """Pending tickets locked in one open transaction; `save` writes their results in it.

    `locked` counts the rows the claim locked: more than `tickets` when the byte budget
    left some bodies on the server (those rows are released untouched at the end).
    """

    def __init__(self, cursor, queries: dict[str, str], tickets: list[ClaimedTicket], *, locked: int) -> None:
        self._cursor = cursor
        self._queries = queries
        self.tickets = tickets
        self.locked = locked

    async def first_tickets_with(self, *, digests: set[bytes]) -> dict[bytes, str]:
        """digest -> the ticket first processed with that body, for digests processed before."""
        if not digests:
            return {}
        await self._cursor.execute(self._queries["first_tickets_with_bodies"], {"digests": list(digests)})
        return {bytes(digest): ticket_id for digest, ticket_id in await self._cursor.fetchall()}

    async def first_tickets_for(self, *, digests: dict[bytes, str]) -> dict[bytes, str]:
        """Register digest -> candidate ticket id; return digest -> the ticket that was first."""
        if not digests:
            return {}
        await self._cursor.execute(
            self._queries["register_processed_bodies"],
            {"digests": list(digests), "ticket_ids": list(digests.values())},
        )
        return await self.first_tickets_with(digests=set(digests))

    async def save(
        self, *, outcomes: Sequence[TicketOutcome], lines: Sequence[LineRow], products: Sequence[ProductSighting]
    ) -> None:
        """Write lines, catalogue merges and outcomes; each statement takes one JSON array."""
        if lines:
            rows = [
                {
                    "ticket_id": line.ticket_id,
                    "line_number": line.line_number,
                    "product_id": line.product_id,
                    "name": line.name,
                    "price": str(line.price),
                }
                for line in lines
            ]
            await self._cursor.execute(self._queries["insert_ticket_lines"], {"rows": _json(rows)})
        if products:
            rows = [
                {
                    "product_id": product.product_id,
                    "name": product.name,
                    "price": str(product.price),
                    "first_seen_at": product.first_seen_at.isoformat(),
                    "last_seen_at": product.last_seen_at.isoformat(),
                    "last_ticket_seq": product.last_ticket_seq,
                    "times_seen": product.times_seen,
                }
                for product in products
            ]
            await self._cursor.execute(self._queries["upsert_products"], {"rows": _json(rows)})
        rows = [
            {
                "id": outcome.id,
                "status": outcome.status,
                "order_ref": outcome.order_ref,
                "vat": _money(outcome.vat),
                "total": _money(outcome.total),
                "headers": outcome.headers,
                "warnings": list(outcome.warnings),
                "error": outcome.error,
                "text_encoding": outcome.encoding,
                "body_sha256": outcome.digest.hex() if outcome.digest is not None else None,
                "duplicate_of": outcome.duplicate_of,
            }
            for outcome in outcomes
        ]
        await self._cursor.execute(self._queries["record_outcomes"], {"rows": _json(rows)})


def _one_line(exc: BaseException) -> str:
    """The driver's message on one line (libpq's carry newlines and tabs)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def _unavailable(what: str, exc: BaseException) -> DatabaseUnavailable:
    """The domain error for a driver error, naming the operation that met it."""
    return DatabaseUnavailable(f"{what}: {_one_line(exc)}")


def _database_error(what: str, exc: BaseException) -> DatabaseUnavailable | DataRejected:
    """The domain error for a driver error, by the kind of its SQLSTATE."""
    sqlstate = getattr(exc, "pgcode", None)
    kind = failure_kind(sqlstate)
    if kind is FailureKind.UNAVAILABLE:
        return _unavailable(what, exc)
    condition = (psycopg2.errorcodes.lookup(sqlstate) or "").lower()
    # The primary message alone: the server's DETAIL and HINT lines are advice to a DBA.
    diagnostics = getattr(exc, "diag", None)
    message = getattr(diagnostics, "message_primary", None) or _one_line(exc)
    detail = f"{sqlstate} {condition}".strip() + f": {' '.join(message.split())}"
    if kind is FailureKind.CONFLICT:
        return DatabaseConflict(f"{what}: {detail}")
    return DataRejected(f"{what}: {detail}", sqlstate=sqlstate, reason=detail)


def _money(amount: Decimal | None) -> str | None:
    """Decimal as a JSON string, so no float ever carries money."""
    return None if amount is None else str(amount)


def _json(rows: list[dict[str, Any]]) -> str:
    """Rows as one JSON text parameter. orjson, because the standard encoder was a sixth
    of the worker's CPU; decoded to str, as psycopg2 would send bytes as bytea."""
    return orjson.dumps(rows).decode()


def load_queries(sql_dir: Path = SQL_DIR) -> dict[str, str]:
    """Read every `-- name:` block of sql/*.sql; names must be unique."""
    queries: dict[str, str] = {}
    for path in sorted(sql_dir.glob("*.sql")):
        text = path.read_text(encoding="utf-8")
        matches = list(_NAME_LINE.finditer(text))
        for index, match in enumerate(matches):
            end = matches[index + 1].start() if index + 1 < len(matches) else len(text)
            name = match.group("name")
            if name in queries:
                raise ValueError(f"{path.name}: query {name!r} is defined twice")
            queries[name] = text[match.end():end].strip()
    return queries


class Repository:
    """Named queries over an aiopg pool."""

    def __init__(self, pool: aiopg.Pool, queries: dict[str, str], database_url: str) -> None:
        self._pool = pool
        self._queries = queries
        self._database_url = database_url

    @classmethod
    async def connect(cls, database_url: str, *, max_connections: int = 10, min_connections: int = 1) -> Repository:
        """A pool; with `min_connections=0` it opens no connection yet, so it can be
        created while PostgreSQL is down (the service then starts spooling)."""
        try:
            pool = await aiopg.create_pool(
                database_url,
                minsize=min_connections,
                maxsize=max_connections,
                timeout=10,
                # hstore support costs one query per new connection; we never use it.
                enable_hstore=False,
            )
        except (psycopg2.Error, OSError) as exc:
            raise _unavailable("connect", exc) from exc
        return cls(pool, load_queries(), database_url)

    async def close(self) -> None:
        self._pool.close()
        await self._pool.wait_closed()

    async def _fetch(self, name: str, params: dict[str, Any] | None = None) -> list[tuple]:
        try:
            async with self._pool.acquire() as conn:
                async with conn.cursor() as cur:
                    await cur.execute(self._queries[name], params)
                    if cur.description is None:
                        return []
                    return await cur.fetchall()
        except _DRIVER_ERRORS as exc:
            raise _database_error(name, exc) from exc

    async def store_tickets(self, *, tickets: Sequence[IncomingTicket]) -> int:
        """Insert a batch in one statement (one commit); return how many rows were new."""
        rows = await self._fetch(
            "insert_tickets",
            {
                "ids": [ticket.id for ticket in tickets],
                "received_at": [ticket.received_at for ticket in tickets],
                "content_types": [ticket.content_type for ticket in tickets],
                "bodies": [ticket.body for ticket in tickets],
            },
        )
        return rows[0][0]

    @contextlib.asynccontextmanager
    async def claim_pending(self, *, limit: int, max_bytes: int) -> AsyncIterator[ClaimedBatch]:
        """Lock up to `limit` pending tickets and load those whose bodies fit in `max_bytes`
        together (at least one); commit what `save` wrote on exit, roll back on error."""
        try:
            async with self._pool.acquire() as conn:
                async with conn.cursor() as cur:
                    async with cur.begin():
                        await cur.execute(
                            self._queries["claim_pending_tickets"], {"limit": limit, "max_bytes": max_bytes}
                        )
                        rows = await cur.fetchall()
                        tickets = [
                            ClaimedTicket(ticket_id, seq, received_at, bytes(body))
                            for ticket_id, seq, received_at, body, _ in rows
                        ]
                        yield ClaimedBatch(cur, self._queries, tickets, locked=rows[0][4] if rows else 0)
        except _DRIVER_ERRORS as exc:
            raise _database_error("claim_pending", exc) from exc

    async def record_failed_attempt(self, *, ticket_id: str, error: str, max_attempts: int) -> str | None:
        """Count one unexpected failure; return the ticket's status afterwards."""
        rows = await self._fetch(
            "record_failed_attempt", {"id": ticket_id, "error": error, "max_attempts": max_attempts}
        )
        return rows[0][0] if rows else None

    async def count_pending(self) -> int:
        return (await self._fetch("count_pending"))[0][0]

    async def requeue(self, *, statuses: Sequence[str], since: datetime | None, ticket_id: str | None = None) -> int:
        """Put the matching tickets back to pending; return how many."""
        params = {"statuses": list(statuses), "since": since, "id": ticket_id}
        return (await self._fetch("requeue_tickets", params))[0][0]

    async def requeue_candidates(
        self, *, statuses: Sequence[str], since: datetime | None, ticket_id: str | None = None
    ) -> list[RequeueCandidate]:
        """What `requeue` would put back to pending, oldest first; changes nothing."""
        params = {"statuses": list(statuses), "since": since, "id": ticket_id}
        return [RequeueCandidate(*row) for row in await self._fetch("requeue_candidates", params)]

    async def ticket_status(self, *, ticket_id: str) -> str | None:
        rows = await self._fetch("ticket_status", {"id": ticket_id})
        return rows[0][0] if rows else None

    @contextlib.asynccontextmanager
    async def ticket_notifications(self) -> AsyncIterator[asyncio.Queue]:
        """A dedicated LISTEN connection; yields its queue of wake-ups."""
        try:
            conn = await aiopg.connect(self._database_url, enable_hstore=False, timeout=10)
        except _DRIVER_ERRORS as exc:
            raise _database_error("listen", exc) from exc
        try:
            async with conn.cursor() as cur:
                await cur.execute(self._queries["listen_tickets"])
            yield conn.notifies
        finally:
            conn.close()

    async def ticket(
        self, *, ticket_id: str, lines_after: int = 0, lines_limit: int = 100
    ) -> dict[str, Any] | None:
        """A ticket with one page of its lines: those numbered after `lines_after`, at most
        `lines_limit`. `next_lines_after` is the `lines_after` of the next page, None on
        the last; `line_count` counts them all. Pages keep one read from building
        megabytes of JSON on the event loop for a ticket of 100,000 lines."""
        rows = await self._fetch("ticket_by_id", {"id": ticket_id})
        if not rows:
            return None
        (
            ticket_id, status, received_at, content_type, body_bytes, processed_at, order_ref, vat, total,
            headers, warnings, error, encoding, duplicate_of, attempts, line_count,
        ) = rows[0]
        lines = await self._fetch("lines_of_ticket", {"id": ticket_id, "after": lines_after, "limit": lines_limit + 1})
        page = lines[:lines_limit]
        next_lines_after = page[-1][0] if len(lines) > lines_limit else None
        return {
            "id": ticket_id,
            "status": status,
            "received_at": received_at,
            "content_type": content_type,
            "body_bytes": body_bytes,
            "processed_at": processed_at,
            "order_ref": order_ref,
            "vat": vat,
            "total": total,
            "headers": headers,
            "warnings": list(warnings),
            "error": error,
            "text_encoding": encoding,
            "duplicate_of": duplicate_of,
            "attempts": attempts,
            "line_count": line_count,
            "lines": [
                {"line_number": number, "product_id": product_id, "name": name, "price": price}
                for number, product_id, name, price in page
            ],
            "next_lines_after": next_lines_after,
        }

    async def products(self, *, limit: int, after: str | None) -> tuple[list[dict[str, Any]], str | None]:
        """One page of the catalogue and the `after` of the next page, None on the last.

        One row more than `limit` is fetched: only its presence tells a full last page
        from a page that has a successor.
        """
        rows = await self._fetch("products_page", {"limit": limit + 1, "after": after})
        page = [_product(row) for row in rows[:limit]]
        next_after = page[-1]["product_id"] if len(rows) > limit else None
        return page, next_after

    async def product(self, *, product_id: str) -> dict[str, Any] | None:
        rows = await self._fetch("product_by_id", {"product_id": product_id})
        return _product(rows[0]) if rows else None

    async def applied_migrations(self) -> set[str]:
        rows = await self._fetch("applied_migrations")
        return {row[0] for row in rows}


def _product(row: tuple) -> dict[str, Any]:
    product_id, name, price, first_seen_at, last_seen_at, times_seen = row
    return {
        "product_id": product_id,
        "name": name,
        "price": price,
        "first_seen_at": first_seen_at,
        "last_seen_at": last_seen_at,
        "times_seen": times_seen,
    }
