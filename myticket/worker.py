"""The worker: turns pending tickets into outcomes, lines and catalogue entries.

It runs off the request path, so a slow or failing parse never delays or loses an
acknowledgement. Each batch is claimed with `FOR UPDATE SKIP LOCKED` and written in
one transaction: a ticket is processed completely or not at all, several workers
never process the same ticket, and a worker that dies mid-batch leaves its tickets
pending. A batch that fails for any reason but the database being unavailable is
retried one ticket at a time. A ticket whose data PostgreSQL refuses (`DataRejected`:
a value out of range, an index row over the size limit, ...) is then rejected at once
with the database's reason, since the same bytes would fail again; one that fails
otherwise (a conflict, a bug) is rejected after `max_attempts`. Either way it never
blocks the queue, and only `DatabaseUnavailable` pauses the worker.

A claim is bounded in bytes as well as in tickets (`batch_max_bytes`): bodies are
fetched only while they fit, so a burst of large tickets never sits in memory at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import weakref
from datetime import datetime, timezone

import psycopg2

from .metrics import Metrics
from .parser import ParsedTicket, TicketParseError, parse_ticket
from .repository import (
    ClaimedTicket,
    DatabaseConflict,
    DatabaseUnavailable,
    DataRejected,
    LineRow,
    ProductSighting,
    Repository,
    TicketOutcome,
)

log = logging.getLogger(__name__)

BACKLOG_REFRESH_SECONDS = 1.0
# Under load every ingest batch sends a wake-up; starting drains at most this often lets
# each claim take a fuller batch (fewer, larger transactions) at a small cost in lag.
MIN_DRAIN_INTERVAL_SECONDS = 0.05
DEFAULT_BATCH_SIZE = 200
DEFAULT_BATCH_MAX_BYTES = 8 * 1024 * 1024


class DatabaseOutageLog:
    """Logs a database outage when it begins and when it ends, not at every retry.

    Each worker loop retries every `idle_poll_seconds`: a warning per retry and per loop
    buried the log during an outage. The loops of one process share one log (through
    their repository), so a state change is logged once whatever the number of loops.
    """

    def __init__(self) -> None:
        self._down_since: float | None = None

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def failed(self, exc: Exception, *, retry_seconds: float) -> None:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning("worker paused, database unavailable: %s; retrying every %gs", reason, retry_seconds)
        else:
            log.debug("worker still paused, database unavailable: %s", reason)

    def answered(self) -> None:
        if self._down_since is not None:
            log.warning("database answers again after %.1fs; worker resumed", time.monotonic() - self._down_since)
            self._down_since = None


_outage_logs: weakref.WeakKeyDictionary[Repository, DatabaseOutageLog] = weakref.WeakKeyDictionary()


def outage_log_for(repository: Repository) -> DatabaseOutageLog:
    """The outage log shared by every worker on `repository` (the loops of one process)."""
    outage_log = _outage_logs.get(repository)
    if outage_log is None:
        outage_log = _outage_logs[repository] = DatabaseOutageLog()
    return outage_log


def merge_sighting(sightings: dict[str, ProductSighting], ticket: ClaimedTicket, product_id: str, name, price) -> None:
    """Fold one ticket's product into the batch's view; the latest received ticket wins."""
    current = sightings.get(product_id)
    if current is None:
        sightings[product_id] = ProductSighting(
            product_id, name, price, ticket.received_at, ticket.received_at, ticket.seq
        )
        return
    current.times_seen += 1
    current.first_seen_at = min(current.first_seen_at, ticket.received_at)
    if (ticket.received_at, ticket.seq) > (current.last_seen_at, current.last_ticket_seq):
        current.name, current.price = name, price
        current.last_seen_at, current.last_ticket_seq = ticket.received_at, ticket.seq


def processed_outcome(ticket: ClaimedTicket, parsed: ParsedTicket, digest: bytes) -> TicketOutcome:
    return TicketOutcome(
        id=ticket.id,
        status="processed",
        digest=digest,
        order_ref=parsed.order_ref,
        vat=parsed.vat,
        total=parsed.total,
        headers=parsed.headers,
        warnings=parsed.warnings,
        encoding=parsed.encoding,
    )


def duplicate_outcome(ticket: ClaimedTicket, digest: bytes, original: str) -> TicketOutcome:
    return TicketOutcome(id=ticket.id, status="duplicate", digest=digest, duplicate_of=original)


class TicketWorker:
    def __init__(
        self,
        repository: Repository,
        metrics: Metrics,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        batch_max_bytes: int = DEFAULT_BATCH_MAX_BYTES,
        max_attempts: int = 3,
        idle_poll_seconds: float = 1.0,
        outage_log: DatabaseOutageLog | None = None,
    ) -> None:
        self._repository = repository
        self._outage_log = outage_log if outage_log is not None else outage_log_for(repository)
        self._metrics = metrics
        self.batch_size = batch_size
        self.batch_max_bytes = batch_max_bytes
        self.max_attempts = max_attempts
        self.idle_poll_seconds = idle_poll_seconds
        self._claimed_ids: list[str] = []
        # Rows the last claim locked: more than it loaded when the byte budget cut it short.
        self._locked_in_last_claim = 0
        self._backlog_refreshed_at = 0.0
        # Set while the worker waits for a wake-up with nothing left to do.
        self.idle = asyncio.Event()

    async def process_batch(self, *, limit: int) -> int:
        """Claim and process up to `limit` pending tickets in one transaction; return how many."""
        self._claimed_ids = []
        self._locked_in_last_claim = 0
        async with self._repository.claim_pending(limit=limit, max_bytes=self.batch_max_bytes) as batch:
            self._claimed_ids = [ticket.id for ticket in batch.tickets]
            self._locked_in_last_claim = batch.locked
            if not batch.tickets:
                return 0
            outcomes: dict[str, TicketOutcome] = {}
            parsed: list[tuple[ClaimedTicket, ParsedTicket, bytes]] = []
            first_in_batch: dict[bytes, str] = {}
            digests = {ticket.id: hashlib.sha256(ticket.body).digest() for ticket in batch.tickets}
            # A body processed before (a sender's retry, hey's repeated body) is not parsed again.
            processed_before = await batch.first_tickets_with(digests=set(digests.values()))
            for ticket in batch.tickets:
                digest = digests[ticket.id]
                if digest in processed_before:
                    outcomes[ticket.id] = duplicate_outcome(ticket, digest, processed_before[digest])
                    continue
                try:
                    result = parse_ticket(ticket.body)
                except TicketParseError as exc:
                    outcomes[ticket.id] = TicketOutcome(ticket.id, "rejected", digest=digest, error=str(exc))
                    log.info("ticket %s rejected: %s", ticket.id, exc)
                    continue
                parsed.append((ticket, result, digest))
                first_in_batch.setdefault(digest, ticket.id)

            first_ticket = await batch.first_tickets_for(digests=first_in_batch)
            lines: list[LineRow] = []
            sightings: dict[str, ProductSighting] = {}
            for ticket, result, digest in parsed:
                original = first_ticket[digest]
                if original != ticket.id:
                    outcomes[ticket.id] = duplicate_outcome(ticket, digest, original)
                    continue
                outcomes[ticket.id] = processed_outcome(ticket, result, digest)
                last_of_each: dict[str, tuple[str, object]] = {}
                for line in result.lines:
                    lines.append(LineRow(ticket.id, line.line_number, line.product_id, line.name, line.price))
                    last_of_each[line.product_id] = (line.name, line.price)
                for product_id, (name, price) in last_of_each.items():
                    merge_sighting(sightings, ticket, product_id, name, price)

            await batch.save(
                outcomes=list(outcomes.values()),
                lines=lines,
                products=sorted(sightings.values(), key=lambda sighting: sighting.product_id),
            )
            tickets = batch.tickets
        self._count_outcomes(tickets, outcomes)
        return len(tickets)

    def _count_outcomes(self, tickets: list[ClaimedTicket], outcomes: dict[str, TicketOutcome]) -> None:
        now = datetime.now(timezone.utc)
        for ticket in tickets:
            self._metrics.processed(outcomes[ticket.id].status, lag_seconds=(now - ticket.received_at).total_seconds())

    async def drain(self, stop: asyncio.Event | None = None) -> int:
        """Process until no pending ticket is left (or `stop` is set); return how many were handled."""
        handled = 0
        one_at_a_time = 0
        while stop is None or not stop.is_set():
            limit = 1 if one_at_a_time else self.batch_size
            try:
                count = await self.process_batch(limit=limit)
            except Exception as exc:
                if isinstance(exc, DatabaseUnavailable) and not isinstance(exc, DatabaseConflict):
                    raise  # nothing is wrong with these tickets: pause, then retry them all
                if len(self._claimed_ids) > 1:
                    log.warning("batch of %d failed (%s: %s); retrying one ticket at a time",
                                len(self._claimed_ids), type(exc).__name__, exc)
                    one_at_a_time = len(self._claimed_ids)
                    continue
                await self._record_failure(exc)
                continue
            handled += count
            one_at_a_time = max(0, one_at_a_time - count)
            # Fewer rows locked than asked, all of them loaded: the queue is empty for now.
            # Rows the byte budget left behind are pending again: the drain goes on.
            queue_emptied = self._locked_in_last_claim < limit and self._locked_in_last_claim == count
            if count == 0 or (queue_emptied and not one_at_a_time):
                break
        return handled

    async def _record_failure(self, exc: Exception) -> None:
        """Charge the failure of a claim of one ticket to that ticket."""
        if not self._claimed_ids:
            raise exc
        ticket_id = self._claimed_ids[0]
        if isinstance(exc, DataRejected):
            # The same bytes give the same refusal: retrying would only delay the rejection.
            error = f"PostgreSQL refused the ticket's data: {exc.reason}"
            max_attempts = 1
        else:
            error = f"processing failed {self.max_attempts} times: {type(exc).__name__}: {exc}"
            max_attempts = self.max_attempts
        status = await self._repository.record_failed_attempt(
            ticket_id=ticket_id, error=error, max_attempts=max_attempts
        )
        log.warning("ticket %s failed to process (%s: %s); now %s", ticket_id, type(exc).__name__, exc, status)
        if status == "rejected":
            self._metrics.count(self._metrics.tickets_processed, (("outcome", "rejected"),))

    async def refresh_backlog(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._backlog_refreshed_at >= BACKLOG_REFRESH_SECONDS:
            self._backlog_refreshed_at = now
            self._metrics.set_backlog(await self._repository.count_pending())

    async def run(self, stop: asyncio.Event) -> None:
        """Process until `stop` is set, waking on NOTIFY or every `idle_poll_seconds`."""
        while not stop.is_set():
            try:
                async with self._repository.ticket_notifications() as wakeups:
                    while not stop.is_set():
                        drain_started = time.monotonic()
                        await self.drain(stop)
                        await self.refresh_backlog()
                        if not stop.is_set():  # drain stopped before touching the database otherwise
                            self._outage_log.answered()
                        await self._wait_for_wakeup(wakeups, stop)
                        pause = MIN_DRAIN_INTERVAL_SECONDS - (time.monotonic() - drain_started)
                        if pause > 0:
                            await _wait_or_stop(stop, pause)
            except (DatabaseUnavailable, psycopg2.Error) as exc:
                self._outage_log.failed(exc, retry_seconds=self.idle_poll_seconds)
                await _wait_or_stop(stop, self.idle_poll_seconds)
            except Exception:
                # A bug must not silently end processing for the life of the process.
                log.exception("worker loop failed; restarting it")
                await _wait_or_stop(stop, self.idle_poll_seconds)

    async def _wait_for_wakeup(self, wakeups, stop: asyncio.Event) -> None:
        if wakeups.empty():
            waiting = asyncio.ensure_future(wakeups.get())
            self.idle.set()
            try:
                await _wait_or_stop(stop, self.idle_poll_seconds, waiting)
            finally:
                self.idle.clear()
            if not waiting.done():
                waiting.cancel()
            elif waiting.exception() is not None:
                raise waiting.exception()
        while not wakeups.empty():
            wakeups.get_nowait()


async def _wait_or_stop(stop: asyncio.Event, timeout: float, *others: asyncio.Future) -> None:
    """Return when `stop` is set, any of `others` is done, or after `timeout` seconds."""
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({stopping, *others}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
