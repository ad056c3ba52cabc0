"""The named queries of the service, one method each: the only module that says which
statement does what. How PostgreSQL is reached (the pool, transactions, the mapping of
driver errors to the domain's) is `connector`'s; how records become parameters and
rows become records is `rows`'.

Queries are the named blocks shipped in `sql/*.sql`. Every method takes keyword
arguments and returns the records of `domain` (rows mapped once, by column name); no
caller ever sees the driver.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import date, datetime, timedelta

from ..core.database_errors import DatabaseUnavailable, DataRejected
from ..core.domain import (
    ArchivedDayNote,
    ArchivedTicket,
    ClaimedTicket,
    FailedAttempt,
    IncomingTicket,
    Product,
    ProductSighting,
    RequeueCandidate,
    TicketOutcome,
    TicketRecord,
    from_row,
)
from ..core.idempotency import KeyUse
from ..core.ids import day_start, utc_day
from ..core.ticket_search import ERROR_CHARS, TicketSearch, TicketSummary, shortened, walks_by_day
from ..core.parser import TicketLine
from .connector import Connector, Session
from .errors import CHECK_VIOLATION, domain_errors
from .rows import (
    NIL_ID,
    archived_ticket,
    claimed_ticket,
    day_bounds,
    json_text,
    line_rows,
    lines_by_ticket,
    outcome_row,
    product_rows,
    received_at_hint,
    restore_record,
    ticket_batch,
)

log = logging.getLogger(__name__)

DEFAULT_POOL_SIZE = 10
# How long the driver waits for one statement (aiopg's timeout), unless told otherwise.
DEFAULT_STATEMENT_SECONDS = 10
# The lock waits of one myticket_purge_day at most: four partitions, the advisory lock,
# and a detach and a drop on each of the four parents.
PURGE_LOCK_WAITS = 13


class ClaimedBatch:
    """Pending tickets locked in one open transaction; `save` writes their results in it.

    `locked` counts the rows the claim locked: more than `tickets` when the byte budget
    left some bodies on the server (those rows are released untouched at the end).
    """

    def __init__(self, session: Session, tickets: list[ClaimedTicket], *, locked: int) -> None:
        self._session = session
        self.tickets = tickets
        self.locked = locked
        # Every row written for a ticket goes to its day's partition: its reception time.
        self._received_at = {ticket.id: ticket.received_at for ticket in tickets}

    async def first_tickets_with(self, *, digests: set[bytes]) -> dict[bytes, str]:
        """digest -> the ticket first processed with that body, for digests processed before."""
        if not digests:
            return {}
        rows = await self._session.fetch("first_tickets_with_bodies", {"digests": list(digests)})
        return {bytes(row["body_sha256"]): row["ticket_id"] for row in rows}

    async def first_tickets_for(self, *, digests: dict[bytes, str]) -> dict[bytes, str]:
        """Register digest -> candidate ticket id; return digest -> the ticket that was first.

        A digest this call recorded was first with its candidate; only the others (taken
        meanwhile by another worker's ticket) cost a second look-up."""
        if not digests:
            return {}
        rows = await self._session.fetch(
            "register_processed_bodies",
            {
                "digests": list(digests),
                "received_at": [self._received_at[ticket_id] for ticket_id in digests.values()],
                "ticket_ids": list(digests.values()),
            },
        )
        recorded = {bytes(row["body_sha256"]) for row in rows}
        first = {digest: digests[digest] for digest in recorded}
        if len(recorded) < len(digests):
            first.update(await self.first_tickets_with(digests=set(digests) - recorded))
        return first

    async def save(
        self,
        *,
        outcomes: Sequence[TicketOutcome],
        lines: Sequence[tuple[str, TicketLine]],
        products: Sequence[ProductSighting],
    ) -> None:
        """Write lines (each with its ticket's id), catalogue merges and outcomes; each
        statement takes one JSON array of records keyed by column name."""
        if lines:
            await self._session.fetch("insert_ticket_lines", {"rows": json_text(line_rows(lines, self._received_at))})
        if products:
            await self._session.fetch("upsert_products", {"rows": json_text(product_rows(products))})
        rows = [outcome_row(outcome, self._received_at[outcome.id]) for outcome in outcomes]
        await self._session.fetch("record_outcomes", {"rows": json_text(rows)})


def _by_id(ticket_id: str | None) -> dict[str, object]:
    """The parameters that find a ticket by id: the id, and its day (`received_at_hint`)."""
    return {"id": ticket_id, "received_at": received_at_hint(ticket_id)}


def _idempotency_keys(tickets: Sequence[IncomingTicket]) -> dict[str, list]:
    """The keys of the keyed tickets of a batch, as `insert_tickets` notes them."""
    keyed = [ticket for ticket in tickets if ticket.idempotency_key is not None]
    return {
        "key_ids": [ticket.id for ticket in keyed],
        "key_received_at": [ticket.received_at for ticket in keyed],
        "keys": [ticket.idempotency_key for ticket in keyed],
        "key_digests": [ticket.body_sha256 for ticket in keyed],
    }


class Repository:
    """The service's named queries, over a `Connector`."""

    def __init__(self, connector: Connector) -> None:
        self._connector = connector
        # Days whose partitions this process made or found: the ingest path asks for a
        # day's partitions once, not on every batch.
        self._days_with_partitions: set[date] = set()
        # Journal rows (by transaction id) of claims that failed without this process
        # dying, still to delete: see claim_pending.
        self._failed_claims: list[str] = []

    @classmethod
    async def connect(
        cls, database_url: str, *, max_connections: int = DEFAULT_POOL_SIZE, min_connections: int = 1,
        statement_seconds: float = DEFAULT_STATEMENT_SECONDS,
    ) -> Repository:
        """A pool; with `min_connections=0` it opens no connection yet, so it can be
        created while PostgreSQL is down (the service then starts spooling)."""
        return cls(await Connector.open(database_url, max_connections=max_connections,
                                        min_connections=min_connections, statement_seconds=statement_seconds))

    async def close(self) -> None:
        await self._connector.close()

    async def synchronous_replication(self) -> dict:
        """The server's synchronous replication settings and standbys, one row
        (myticket.db.durability decides what they mean)."""
        return (await self._connector.fetch("synchronous_replication"))[0]

    async def create_day_partitions(self, *, days: Iterable[date]) -> int:
        """Make the missing partitions of these UTC days; return how many were made."""
        days = sorted(set(days))
        made = (await self._connector.fetch("create_day_partitions", {"days": days}))[0]["made"]
        self._days_with_partitions.update(days)
        if made:
            log.info("made %d partitions for %s", made, ", ".join(day.isoformat() for day in days))
        return made

    async def store_tickets(self, *, tickets: Sequence[IncomingTicket]) -> int:
        """Insert a batch in one statement (one commit); return how many rows were new.

        A day with no partition (the first batch of a day in this process, a replay or
        restore of an old day, a day purged since) gets its partitions first. A batch
        refused for want of a partition (SQLSTATE 23514: deliveries have no CHECK, so
        it can only mean that) had its day dropped under it: made again, and retried once.
        """
        days = {utc_day(ticket.received_at) for ticket in tickets}
        if not days <= self._days_with_partitions:
            await self.create_day_partitions(days=days - self._days_with_partitions)
        params = {**ticket_batch(tickets), **_idempotency_keys(tickets)}
        try:
            rows = await self._connector.fetch("insert_tickets", params)
        except DataRejected as exc:
            if exc.sqlstate != CHECK_VIOLATION:
                raise
            self._days_with_partitions -= days
            await self.create_day_partitions(days=days)
            rows = await self._connector.fetch("insert_tickets", params)
        return rows[0]["stored"]

    @contextlib.asynccontextmanager
    async def claim_pending(self, *, limit: int, max_bytes: int, line_cost: int) -> AsyncIterator[ClaimedBatch]:
        """Lock up to `limit` pending tickets and load those whose cost (body bytes plus
        `line_cost` per line) fits in `max_bytes` together (at least one); commit what
        `save` wrote on exit, roll back on error.

        Before the block runs, the claim is journalled (one statement on another
        connection, committed at once): if the process dies in the block, the journal
        row outlives the claim's transaction and the next claims treat its tickets as
        suspects (see claim_pending_tickets). A block that fails without the process
        dying (an exception, a cancellation) is not a death: its journal row is deleted
        once the claim has rolled back. MemoryError leaves it, like a death: the worker
        exits on it (an out-of-memory kill gives no exception to catch)."""
        await self._forget_failed_claims()
        journal: dict[str, object] | None = None
        try:
            async with self._connector.session("claim_pending", transaction=True) as session:
                rows = await session.fetch(
                    "claim_pending_tickets", {"limit": limit, "max_bytes": max_bytes, "line_cost": line_cost}
                )
                tickets = []
                if rows:
                    bodies = {
                        row["id"]: row["body"]
                        for row in await session.fetch("claimed_bodies", {
                            "tickets": rows[0]["journal"], "since": rows[0]["received_at"],
                            "until": rows[-1]["received_at"],
                        })
                    }
                    # A row without its delivery (none is known) is left, as a join would.
                    tickets = [claimed_ticket({**row, "body": bodies[row["id"]]}) for row in rows if row["id"] in bodies]
                    journal = {"xact_id": rows[0]["xact_id"], "tickets": rows[0]["journal"]}
                    await self._connector.fetch("journal_claim", journal)
                yield ClaimedBatch(session, tickets, locked=rows[0]["locked_count"] if rows else 0)
        except BaseException as exc:
            if journal is not None and not isinstance(exc, MemoryError):
                self._failed_claims.append(str(journal["xact_id"]))
                await self._forget_failed_claims()
            raise

    async def _forget_failed_claims(self) -> None:
        """Delete the journal rows of claims that failed in this (living) process; kept
        for the next claim while the database cannot be reached."""
        if not self._failed_claims:
            return
        try:
            await self._connector.fetch("forget_claims", {"xact_ids": self._failed_claims})
        except DatabaseUnavailable:
            return
        self._failed_claims.clear()

    async def record_failed_attempt(self, *, ticket_id: str, error: str, max_attempts: int) -> FailedAttempt | None:
        """Count one failed attempt; return the ticket's state afterwards (None when it
        is no longer pending)."""
        rows = await self._connector.fetch(
            "record_failed_attempt",
            {**_by_id(ticket_id), "error": error, "max_attempts": max_attempts},
        )
        return from_row(FailedAttempt, rows[0]) if rows else None

    async def count_pending(self) -> int:
        return (await self._connector.fetch("count_pending"))[0]["pending"]

    async def pending_backlog(self) -> tuple[int, datetime | None]:
        """How many tickets are pending, and when the oldest of them was received."""
        row = (await self._connector.fetch("pending_backlog"))[0]
        return row["pending"], row["oldest_received_at"]

    async def ticket_status(self, *, ticket_id: str) -> str | None:
        rows = await self._connector.fetch("ticket_status", _by_id(ticket_id))
        return rows[0]["status"] if rows else None

    @contextlib.asynccontextmanager
    async def ticket_notifications(self) -> AsyncIterator[asyncio.Queue]:
        """A dedicated LISTEN connection; yields its queue of wake-ups. A driver error met
        while it is open (the connection lost under a wait) leaves as a domain error."""
        async with self._connector.dedicated("listen") as session:
            with domain_errors("listen"):
                await session.fetch("listen_tickets")
                yield session.notifies

    async def ticket(self, *, ticket_id: str) -> TicketRecord | None:
        """A stored ticket and its processing result, with how many lines it has."""
        rows = await self._connector.fetch("ticket_by_id", _by_id(ticket_id))
        return from_row(TicketRecord, rows[0]) if rows else None

    async def ticket_lines(self, *, ticket_id: str, after: int, limit: int) -> tuple[list[TicketLine], int | None]:
        """One page of a ticket's lines: those numbered after `after`, at most `limit`,
        and the `after` of the next page (None on the last). Pages keep one read from
        building megabytes of JSON on the event loop for a ticket of 100,000 lines."""
        rows = await self._connector.fetch(
            "lines_of_ticket",
            {**_by_id(ticket_id), "after": after, "limit": limit + 1},
        )
        page = [from_row(TicketLine, row) for row in rows[:limit]]
        return page, page[-1].line_number if len(rows) > limit else None

    async def products(self, *, limit: int, after: str | None) -> tuple[list[Product], str | None]:
        """One page of the catalogue and the `after` of the next page, None on the last.

        One row more than `limit` is fetched: only its presence tells a full last page
        from a page that has a successor.
        """
        rows = await self._connector.fetch("products_page", {"limit": limit + 1, "after": after})
        page = [from_row(Product, row) for row in rows[:limit]]
        return page, page[-1].product_id if len(rows) > limit else None

    async def product(self, *, product_id: str) -> Product | None:
        rows = await self._connector.fetch("product_by_id", {"product_id": product_id})
        return from_row(Product, rows[0]) if rows else None

    async def day_partitions(self) -> list[date]:
        """The UTC days that have a deliveries partition, oldest first (empty days too)."""
        return [row["day"] for row in await self._connector.fetch("day_partitions")]

    async def archive_page(
        self, *, day: date, after: tuple[str, datetime] | None, limit: int, max_bytes: int
    ) -> list[ArchivedTicket]:
        """The day's tickets after the key `after` (id, received_at; None: from the
        start), in key order, with their outcomes and lines: at most `limit`, and bodies
        within `max_bytes` together (always at least one). Empty past the last ticket.

        The page and its lines are read in one short read-only snapshot, so they agree,
        and nothing is held between pages."""
        lower, upper = day_bounds(day)
        after_id, after_received_at = after if after is not None else (NIL_ID, lower - timedelta(days=1))
        params = {"lower": lower, "upper": upper, "after_id": after_id, "after_received_at": after_received_at,
                  "limit": limit, "max_bytes": max_bytes}
        async with self._connector.session("archive_page", transaction=True) as session:
            await session.fetch("archive_snapshot")
            rows = await session.fetch("archive_page", params)
            page_lines = await session.fetch(
                "archive_page_lines", {"lower": lower, "upper": upper, "ids": [row["id"] for row in rows]}
            ) if rows else []
        lines = lines_by_ticket(page_lines)
        return [archived_ticket(row, lines.get(row["id"], ())) for row in rows]

    async def record_archived_day(
        self, *, day: date, tickets: int, pending: int, file_name: str, sha256: str, directory: str
    ) -> None:
        """Note that the day's archive file is complete, with what it holds."""
        await self._connector.fetch(
            "record_archived_day",
            {"day": day, "tickets": tickets, "pending": pending, "file_name": file_name, "sha256": sha256,
             "directory": directory},
        )

    async def day_holds_tickets(self, *, day: date) -> bool:
        lower, upper = day_bounds(day)
        rows = await self._connector.fetch("day_holds_tickets", {"lower": lower, "upper": upper})
        return bool(rows[0]["holds_tickets"])

    async def archived_day(self, *, day: date) -> ArchivedDayNote | None:
        """What archive noted of the day, None when it never archived it."""
        rows = await self._connector.fetch("archived_day", {"day": day})
        return from_row(ArchivedDayNote, rows[0]) if rows else None

    async def purge_day(self, *, day: date, require_archive: bool, lock_timeout_seconds: float) -> str:
        """Drop the day's partitions, all or none, in one transaction that waits at most
        `lock_timeout_seconds` for its locks (DatabaseConflict past it); return
        'purged', 'absent' or why the day was refused."""
        timeout = f"{int(lock_timeout_seconds * 1000)}ms"
        async with self._connector.session("purge_day", transaction=True) as session:
            await session.fetch("set_purge_lock_timeout", {"timeout": timeout})
            # The function may wait for each of its locks in turn (four partitions, the
            # advisory lock, two per parent), past the pool's 10 s default: the client
            # waits as long, so a long --lock-timeout ends as "busy".
            rows = await session.fetch(
                "purge_day", {"day": day, "require_archive": require_archive},
                timeout=PURGE_LOCK_WAITS * lock_timeout_seconds + self._connector.statement_seconds,
            )
        result = rows[0]["result"]
        if result == "purged":
            # Its partitions are gone: a ticket for that day must make them again.
            self._days_with_partitions.discard(day)
        return result

    async def restore_tickets(self, *, tickets: Sequence[ArchivedTicket]) -> int:
        """Store archived tickets that are not stored yet, with their state; return how
        many were new. Their days' partitions are made first."""
        if not tickets:
            return 0
        await self.create_day_partitions(days={utc_day(ticket.received_at) for ticket in tickets})
        params = {
            "bodies": [ticket.body for ticket in tickets],
            "records": [restore_record(ticket) for ticket in tickets],
        }
        return (await self._connector.fetch("restore_tickets", params))[0]["stored"]

    @contextlib.asynccontextmanager
    async def maintenance_lock(self) -> AsyncIterator[bool]:
        """Try the retention lock on a connection of its own; yield whether this process
        got it. It is held until the block ends (the connection is then closed, which
        releases it; so does the death of the process)."""
        async with self._connector.dedicated("try_maintenance_lock") as session:
            with domain_errors("try_maintenance_lock"):  # not the block's errors: those are its own
                held = bool((await session.fetch("try_maintenance_lock"))[0]["held"])
            yield held

    async def find_tickets(
        self, *, search: TicketSearch, after: tuple[datetime, str] | None, limit: int
    ) -> tuple[list[TicketSummary], tuple[datetime, str] | None]:
        """One page of the tickets `search` chooses, newest first, after the key `after`
        (received_at, id); and the key of the next page, None on the last. The query
        is the one whose index serves the most selective filter given; over a window of
        many days, its walk newest day first (the same rows, without planning every day)."""
        after_received_at, after_id = after if after is not None else (None, None)
        params = {
            "statuses": list(search.statuses), "since": search.since, "until": search.until,
            "order_ref": search.order_ref, "product_id": search.product_id,
            "after_received_at": after_received_at, "after_id": after_id,
            "limit": limit + 1, "error_chars": ERROR_CHARS + 1,
        }
        if search.product_id is not None:
            name = "tickets_page_by_product"
        elif search.order_ref is not None:
            name = "tickets_page_by_order_ref"
        else:
            name = "tickets_page"
        if walks_by_day(search.since, search.until):
            name += "_walked"
        rows = await self._connector.fetch(name, params)
        page = [from_row(TicketSummary, {**row, "error": shortened(row["error"])}) for row in rows[:limit]]
        next_after = (page[-1].received_at, page[-1].id) if len(rows) > limit else None
        return page, next_after

    async def ticket_body(self, *, ticket_id: str) -> tuple[bytes, str | None] | None:
        """The exact stored bytes of a ticket and their Content-Type; None when unknown."""
        rows = await self._connector.fetch("ticket_body", _by_id(ticket_id))
        return (bytes(rows[0]["body"]), rows[0]["content_type"]) if rows else None

    async def requeue(
        self, *, statuses: Sequence[str], since: datetime | None = None, until: datetime | None = None,
        order_ref: str | None = None, ticket_id: str | None = None,
    ) -> int:
        """Put the matching tickets back to pending, in one statement; return how many."""
        params = {"statuses": list(statuses), "since": since, "until": until, "order_ref": order_ref,
                  **_by_id(ticket_id)}
        return (await self._connector.fetch("requeue_tickets", params))[0]["requeued"]

    async def requeue_candidates(
        self, *, statuses: Sequence[str], since: datetime | None = None, until: datetime | None = None,
        order_ref: str | None = None, ticket_id: str | None = None,
    ) -> list[RequeueCandidate]:
        """What `requeue` would put back to pending, oldest first; changes nothing."""
        params = {"statuses": list(statuses), "since": since, "until": until, "order_ref": order_ref,
                  **_by_id(ticket_id)}
        rows = await self._connector.fetch("requeue_candidates", params)
        return [from_row(RequeueCandidate, row) for row in rows]

    async def idempotency_key_use(self, *, key: str, since_day: date) -> KeyUse | None:
        """The first use of `key` on `since_day` or later; None when it is not known."""
        rows = await self._connector.fetch("idempotency_key_use", {"key": key, "since_day": day_start(since_day)})
        return KeyUse(rows[0]["ticket_id"], bytes(rows[0]["body_sha256"])) if rows else None

    async def drop_idempotency_keys(self, *, before: date) -> int:
        """Drop the key partitions of the days before `before`; return how many."""
        return (await self._connector.fetch("drop_idempotency_key_partitions", {"before": before}))[0]["dropped"]

    async def forget_purged_digests(self) -> list[datetime]:
        """Delete the digests of the purged days, one day per statement; the days done.
        The look-up ignores them from the purge on: this only gives the space back."""
        days = []
        while rows := await self._connector.fetch("forget_purged_digests"):
            days.append(rows[0]["day"])
        return days

    async def applied_migrations(self) -> set[str]:
        rows = await self._connector.fetch("applied_migrations")
        return {row["migration_id"] for row in rows}
