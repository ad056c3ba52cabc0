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

A claim is bounded in memory as well as in tickets (`batch_max_bytes`): a ticket
costs its body bytes plus `CLAIM_COST_PER_LINE` per line (counted at ingest), and
bodies are fetched only while they fit, so a burst of large tickets never sits in
memory at once. A claim holds at most that budget, or one ticket when a ticket alone
exceeds it (a 1 MiB body of 50,000 lines: about 100 MiB).

A ticket whose processing kills the worker process (out of memory, a crash) is
counted through the journal of claims (Repository.claim_pending): after a death, the
claim's tickets are processed one at a time, so a second death is charged to its own
ticket only, and after `max_attempts` such deaths the ticket is rejected, without
being parsed again, with "worker died N times while processing this ticket". The
other tickets flow meanwhile. MemoryError counts as such a death: a worker process of
its own exits on it, an inline worker goes on (`exit_on_memory_error`). Cost on the normal path: one INSERT per claim (on
another pooled connection) and its DELETE inside the outcomes' statement.

The decisions (duplicate or not, outcome, catalogue folding, what a failure means)
are the pure functions of `processing`; this module does the I/O around them.
`run_worker_loops` is the one lifecycle of the worker, however it is placed (tasks in
the HTTP process, the worker process of `serve`, the standalone `myticket worker`); it
runs the maintenance loop (`maintenance`) beside the ticket loops.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from dataclasses import dataclass
from datetime import datetime, timezone

from ..config import DEFAULT_WORKER_BATCH_MAX_BYTES, DEFAULT_WORKER_BATCH_SIZE, Settings
from ..core.database_errors import DatabaseUnavailable
from ..core.domain import ClaimedTicket, TicketOutcome
from ..core.events import first_of
from .maintenance import Maintenance
from ..telemetry.metrics import Metrics
from ..telemetry.outage_log import DatabaseOutageLog
from ..telemetry.outcome_log import log_outcome
from ..core.parser import parse_ticket
from ..core.processing import CLAIM_COST_PER_LINE, Parse, RetryAction, RetryDecision, body_digest, plan_batch, retry_decision, settle_batch
from ..db.repository import Repository

log = logging.getLogger(__name__)

BACKLOG_REFRESH_SECONDS = 1.0
# Under load every ingest batch sends a wake-up; starting drains at most this often lets
# each claim take a fuller batch (fewer, larger transactions) at a small cost in lag.
# 200 ms rather than 50: about a twentieth less CPU per ticket, most of it PostgreSQL's
# (fewer catalogue rewrites and per-claim statements), for at most 150 ms more lag.
MIN_DRAIN_INTERVAL_SECONDS = 0.2
DEFAULT_MAX_ATTEMPTS = 3


_outage_logs: weakref.WeakKeyDictionary[Repository, DatabaseOutageLog] = weakref.WeakKeyDictionary()


def outage_log_for(repository: Repository) -> DatabaseOutageLog:
    """The outage log shared by every worker on `repository` (the loops of one process).

    Each worker loop retries every `idle_poll_seconds`: a warning per retry and per loop
    buried the log during an outage. Sharing one log per repository logs a state change
    once whatever the number of loops."""
    outage_log = _outage_logs.get(repository)
    if outage_log is None:
        outage_log = _outage_logs[repository] = DatabaseOutageLog(
            log,
            began="worker paused, database unavailable: %s; retrying every %gs",
            still="worker still paused, database unavailable: %s",
            ended="database answers again after %.1fs; worker resumed",
        )
    return outage_log


@dataclass(frozen=True)
class Claimed:
    """What one claim did: tickets handled, and rows locked (more than handled when the
    byte budget left some bodies on the server)."""

    handled: int
    locked: int


class BatchFailed(Exception):
    """A batch failed; `claimed` names the tickets it had claimed (none when the claim
    itself failed), so that the failure can be charged to the right ticket."""

    def __init__(self, cause: Exception, claimed: tuple[str, ...]) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.claimed = claimed


class TicketWorker:
    def __init__(
        self,
        repository: Repository,
        metrics: Metrics,
        *,
        batch_size: int = DEFAULT_WORKER_BATCH_SIZE,
        batch_max_bytes: int = DEFAULT_WORKER_BATCH_MAX_BYTES,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        idle_poll_seconds: float = 1.0,
        outage_log: DatabaseOutageLog | None = None,
        parse: Parse = parse_ticket,
        exit_on_memory_error: bool = False,
    ) -> None:
        self._repository = repository
        self._outage_log = outage_log if outage_log is not None else outage_log_for(repository)
        self._metrics = metrics
        self._parse = parse
        self.batch_size = batch_size
        self.batch_max_bytes = batch_max_bytes
        self.max_attempts = max_attempts
        self.idle_poll_seconds = idle_poll_seconds
        self.exit_on_memory_error = exit_on_memory_error
        self._backlog_refreshed_at = 0.0
        # Set while the worker waits for a wake-up with nothing left to do.
        self.idle = asyncio.Event()

    async def process_batch(self, *, limit: int) -> Claimed:
        """Claim and process up to `limit` pending tickets in one transaction; raise
        BatchFailed, naming the tickets claimed, if it fails."""
        claimed: tuple[str, ...] = ()
        try:
            async with self._repository.claim_pending(
                limit=limit, max_bytes=self.batch_max_bytes, line_cost=CLAIM_COST_PER_LINE
            ) as batch:
                claimed = tuple(ticket.id for ticket in batch.tickets)
                if not batch.tickets:
                    return Claimed(0, batch.locked)
                digests = {ticket.id: body_digest(ticket.body) for ticket in batch.tickets}
                # A body processed before (a sender's retry, hey's repeated body) is not parsed again.
                processed_before = await batch.first_tickets_with(digests=set(digests.values()))
                plan = plan_batch(
                    batch.tickets, digests, processed_before, self._parse, max_crashes=self.max_attempts
                )
                first_ticket = await batch.first_tickets_for(digests=plan.candidates)
                results = settle_batch(plan, first_ticket)
                await batch.save(
                    outcomes=list(results.outcomes.values()), lines=results.lines, products=results.products
                )
                tickets, locked = batch.tickets, batch.locked
        except MemoryError:
            raise  # a death, not a failure of these tickets: see run
        except Exception as exc:
            raise BatchFailed(exc, claimed) from exc
        self._count_outcomes(tickets, results.outcomes)
        return Claimed(len(tickets), locked)

    def _count_outcomes(self, tickets: list[ClaimedTicket], outcomes: dict[str, TicketOutcome]) -> None:
        now = datetime.now(timezone.utc)
        for ticket in tickets:
            self._metrics.processed(outcomes[ticket.id].status, lag_seconds=(now - ticket.received_at).total_seconds())
            log_outcome(outcomes[ticket.id])

    async def drain(self, stop: asyncio.Event | None = None) -> int:
        """Process until no pending ticket is left (or `stop` is set); return how many were handled."""
        handled = 0
        one_at_a_time = 0  # tickets of a failed batch still to retry alone
        while stop is None or not stop.is_set():
            limit = 1 if one_at_a_time else self.batch_size
            try:
                claim = await self.process_batch(limit=limit)
            except BatchFailed as failure:
                decision = retry_decision(failure.cause, claimed=failure.claimed, max_attempts=self.max_attempts)
                if decision.action in (RetryAction.PAUSE, RetryAction.RAISE):
                    raise failure.cause from None  # PAUSE: nothing is wrong with these tickets
                if decision.action is RetryAction.SPLIT:
                    log.warning("batch of %d failed (%s: %s); retrying one ticket at a time",
                                len(failure.claimed), type(failure.cause).__name__, failure.cause)
                    one_at_a_time = len(failure.claimed)
                    continue
                await self._charge(decision, failure.cause)
                continue
            handled += claim.handled
            one_at_a_time = max(0, one_at_a_time - claim.handled)
            # Fewer rows locked than asked, all of them loaded: the queue is empty for now.
            # Rows the byte budget left behind are pending again: the drain goes on.
            queue_emptied = claim.locked < limit and claim.locked == claim.handled
            if claim.handled == 0 or (queue_emptied and not one_at_a_time):
                break
        return handled

    async def _charge(self, decision: RetryDecision, exc: Exception) -> None:
        """Count a failed attempt against the ticket the decision names; a ticket
        rejected by it is counted as processed (rejected), with its lag."""
        attempt = await self._repository.record_failed_attempt(
            ticket_id=decision.ticket_id, error=decision.error, max_attempts=decision.max_attempts
        )
        status = attempt.status if attempt is not None else None
        log.warning("ticket %s failed to process (%s: %s); now %s",
                    decision.ticket_id, type(exc).__name__, exc, status, extra={"ticket_id": decision.ticket_id})
        if attempt is not None and attempt.status == "rejected":
            lag = (datetime.now(timezone.utc) - attempt.received_at).total_seconds()
            self._metrics.processed("rejected", lag_seconds=lag)

    async def refresh_backlog(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._backlog_refreshed_at >= BACKLOG_REFRESH_SECONDS:
            self._backlog_refreshed_at = now
            measured_at = time.time()
            pending, oldest_received_at = await self._repository.pending_backlog()
            self._metrics.set_backlog(pending, oldest_received_at=oldest_received_at, measured_at=measured_at)
            self._metrics.set_database_up(True)

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
                            await first_of(stop, timeout=pause)
            except DatabaseUnavailable as exc:
                self._metrics.set_database_up(False)
                self._outage_log.failed(exc, retry_seconds=self.idle_poll_seconds)
                await first_of(stop, timeout=self.idle_poll_seconds)
            except MemoryError:
                # Out of memory, as a kill by the kernel would be without the exception.
                # The claim rolled back and left its journal row: it counts as a death
                # (Repository.claim_pending), whose tickets are retried alone. A worker
                # process of its own exits (its supervisor starts it again, with its
                # state fresh); inline, the HTTP process must live on, so the loop goes on.
                if self.exit_on_memory_error:
                    log.critical("worker out of memory; the worker process exits")
                    raise
                log.error("worker out of memory; the claim counts as a death of the worker, the loop goes on")
                await first_of(stop, timeout=self.idle_poll_seconds)
            except Exception:
                # A bug must not silently end processing for the life of the process.
                log.exception("worker loop failed; restarting it")
                await first_of(stop, timeout=self.idle_poll_seconds)

    async def _wait_for_wakeup(self, wakeups, stop: asyncio.Event) -> None:
        if wakeups.empty():
            waiting = asyncio.ensure_future(wakeups.get())
            self.idle.set()
            try:
                await first_of(stop, timeout=self.idle_poll_seconds, others=(waiting,))
            finally:
                self.idle.clear()
            if not waiting.done():
                waiting.cancel()
            elif waiting.exception() is not None:
                raise waiting.exception()
        while not wakeups.empty():
            wakeups.get_nowait()


def workers_for(
    repository: Repository, metrics: Metrics, settings: Settings, *, exit_on_memory_error: bool = False
) -> list[TicketWorker]:
    """The worker loops `settings` ask for, on one repository."""
    return [
        TicketWorker(
            repository, metrics,
            batch_size=settings.worker_batch_size,
            batch_max_bytes=settings.worker_batch_max_bytes,
            max_attempts=settings.worker_max_attempts,
            exit_on_memory_error=exit_on_memory_error,
        )
        for _ in range(settings.workers)
    ]


async def run_worker_loops(
    repository: Repository, metrics: Metrics, settings: Settings, stop: asyncio.Event,
    *, start_when: asyncio.Event | None = None, exit_on_memory_error: bool = False,
) -> None:
    """The worker of one process, however it is placed: once `start_when` is set (the
    database confirmed: the worker must not read tables that may not exist yet), the
    loops run until `stop`, each finishing its batch, beside the maintenance loop
    (partitions ahead, retention). `exit_on_memory_error`: in a process of the worker's
    own, MemoryError ends it (see TicketWorker.run)."""
    if start_when is not None:
        await first_of(start_when, stop)
        if stop.is_set():
            return
    maintenance = Maintenance(
        repository, metrics,
        interval_seconds=settings.maintenance_interval_seconds,
        retention_days=settings.retention_days,
        archive_dir=settings.archive_dir,
        idempotency_key_hours=settings.idempotency_key_hours,
    )
    await asyncio.gather(
        *(worker.run(stop) for worker in workers_for(repository, metrics, settings,
                                                     exit_on_memory_error=exit_on_memory_error)),
        maintenance.run(stop),
    )
