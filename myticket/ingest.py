"""Group commit: many concurrent POSTs, one INSERT and one commit per batch.

`submit()` returns only once the batch holding the ticket has been stored by
`store_batch` (committed in PostgreSQL, or spooled), and raises that batch's error
otherwise: nothing is acknowledged from memory. When nothing is in flight a ticket is
flushed at once (no added latency when idle); while flushes are in flight, arrivals
accumulate and leave together as the next batch. The number of tickets waiting is
bounded: past it, `submit()` refuses with `Overloaded` instead of queueing without limit.
A batch is bounded in tickets and in body bytes (always at least one ticket).
A batch that fails for another reason than unavailability is split in halves, down to
single tickets, so that only the ticket that causes the failure gets the error.
`DurableStore` decides where a batch goes: PostgreSQL, or the local spool.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence

from .config import DEFAULT_BATCH_MAX_BYTES
from .metrics import Metrics
from .repository import DatabaseUnavailable, IncomingTicket, Repository
from .spool import DatabaseIdentity, ForeignSpool, Spool, SpoolUnavailable

log = logging.getLogger(__name__)

StoreBatch = Callable[[Sequence[IncomingTicket]], Awaitable[None]]


class Overloaded(Exception):
    """Too many tickets are waiting for a commit; the sender should retry later."""


class ShuttingDown(Exception):
    """The service is stopping and admits no new ticket."""


def batch_length(body_sizes: Iterable[int], *, max_tickets: int, max_bytes: int) -> int:
    """How many of the waiting tickets (their body sizes, oldest first) the next batch
    takes: at most `max_tickets`, and no more than `max_bytes` of bodies, except that a
    batch always takes one ticket (a body is never larger than the body limit)."""
    taken = 0
    total = 0
    for size in body_sizes:
        if taken == max_tickets or (taken and total + size > max_bytes):
            break
        taken += 1
        total += size
    return taken


# Failures that say where a batch may be stored (the database or the spool cannot take
# it now), not which ticket is wrong: every ticket of the batch shares them, and
# splitting the batch would only repeat them.
UNAVAILABILITY = (DatabaseUnavailable, SpoolUnavailable)


def isolates_culprit(failure: BaseException, batch_size: int) -> bool:
    """Whether a failed batch is worth splitting to find the ticket that caused it."""
    return batch_size > 1 and isinstance(failure, Exception) and not isinstance(failure, UNAVAILABILITY)


async def store_isolating_failures(
    store_batch: StoreBatch, tickets: Sequence[IncomingTicket], *, on_stored: Callable[[int], None] | None = None
) -> list[Exception | None]:
    """Store `tickets` and return, for each, None (stored) or the error that kept it out.

    A batch that fails for a reason other than unavailability (one ticket's value that
    the database refuses, say) is stored in two halves, recursively, so that the other
    tickets are stored and only the culprit gets the error. Unavailability fails the
    whole batch at once. A cancellation of the caller propagates.
    """
    try:
        await store_batch(tickets)
    except Exception as exc:
        if not isolates_culprit(exc, len(tickets)):
            return [exc] * len(tickets)
        # Debug only: each level of the search would repeat it; the culprit's id is
        # logged once it is alone (GroupCommitIngest) and with its 500 (the handler).
        log.debug(
            "batch of %d tickets refused (%s: %s); storing it in halves to isolate the culprit",
            len(tickets), type(exc).__name__, exc,
        )
        middle = len(tickets) // 2
        first = await store_isolating_failures(store_batch, tickets[:middle], on_stored=on_stored)
        second = await store_isolating_failures(store_batch, tickets[middle:], on_stored=on_stored)
        return first + second
    if on_stored is not None:
        on_stored(len(tickets))
    return [None] * len(tickets)


# SQLSTATE of a statement cancelled by the server: statement_timeout, or pg_cancel_backend.
QUERY_CANCELED = "57014"


def is_statement_timeout(failure: BaseException) -> bool:
    """Whether a failure to store a batch is a timeout of its statement (aiopg's own
    operation timeout, or the server's statement_timeout), rather than a refusal."""
    seen: set[int] = set()
    cause: BaseException | None = failure
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, TimeoutError) or getattr(cause, "pgcode", None) == QUERY_CANCELED:
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def cancelled_by_the_server(cancellation: asyncio.CancelledError) -> bool:
    """aiopg turns a statement the server cancelled (SQLSTATE 57014) into a CancelledError
    of the awaiting task; tell it from a real cancellation of that task."""
    task = asyncio.current_task()
    asked_to_cancel = task is not None and task.cancelling() > 0
    return not asked_to_cancel and getattr(cancellation.__context__, "pgcode", None) == QUERY_CANCELED


class _Waiting:
    """A ticket admitted for the next batches, the future its handler awaits, and what
    to call once it is settled (stored or failed), whether or not the handler still waits."""

    __slots__ = ("ticket", "stored", "on_settled")

    def __init__(self, ticket: IncomingTicket, stored: asyncio.Future[None], on_settled: Callable[[], None] | None):
        self.ticket = ticket
        self.stored = stored
        self.on_settled = on_settled


class GroupCommitIngest:
    def __init__(
        self,
        store_batch: StoreBatch,
        *,
        batch_max_size: int,
        max_waiting: int,
        batch_max_bytes: int | None = None,
        max_flushes_in_flight: int = 1,
        on_batch_stored: Callable[[int], None] | None = None,
    ) -> None:
        self._store_batch = store_batch
        self._batch_max_size = batch_max_size
        self._batch_max_bytes = batch_max_bytes if batch_max_bytes is not None else float("inf")
        self._max_waiting = max_waiting
        self._max_flushes_in_flight = max_flushes_in_flight
        self._on_batch_stored = on_batch_stored
        self._queue: deque[_Waiting] = deque()
        self._waiting = 0
        self._flushes_in_flight = 0
        self._flush_tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def waiting(self) -> int:
        """Tickets admitted but not yet stored."""
        return self._waiting

    async def submit(self, ticket: IncomingTicket, *, on_settled: Callable[[], None] | None = None) -> None:
        """Wait until `ticket` is stored; raise Overloaded, ShuttingDown or the store's error.

        `on_settled` is called exactly once, whatever happens: at once when the ticket is
        refused, else when its batch is stored or failed, even if this wait was cancelled
        meanwhile (the ticket's bytes are held until then).
        """
        if self._closing or self._waiting >= self._max_waiting:
            if on_settled is not None:
                on_settled()
            raise ShuttingDown() if self._closing else Overloaded()
        stored = asyncio.get_running_loop().create_future()
        self._queue.append(_Waiting(ticket, stored, on_settled))
        self._waiting += 1
        self._idle.clear()
        self._start_flushes()
        # If the client goes away and this wait is cancelled, the ticket stays in its
        # batch and is committed all the same: the batch does not depend on the waiter.
        await stored

    def _start_flushes(self) -> None:
        while self._queue and self._flushes_in_flight < self._max_flushes_in_flight:
            taken = batch_length(
                (len(waiting.ticket.body) for waiting in self._queue),
                max_tickets=self._batch_max_size, max_bytes=self._batch_max_bytes,
            )
            batch = [self._queue.popleft() for _ in range(taken)]
            self._flushes_in_flight += 1
            task = asyncio.get_running_loop().create_task(self._flush(batch))
            self._flush_tasks.add(task)
            task.add_done_callback(self._flush_tasks.discard)

    async def _flush(self, batch: list[_Waiting]) -> None:
        try:
            outcomes = await store_isolating_failures(
                self._store_batch, [waiting.ticket for waiting in batch], on_stored=self._on_batch_stored
            )
        except BaseException:
            # Cancelled (the loop is closing): no waiter may wait for ever.
            outcomes = [ShuttingDown()] * len(batch)
            raise
        finally:
            self._settle(batch, outcomes)
            self._waiting -= len(batch)
            self._flushes_in_flight -= 1
            self._start_flushes()
            if self._waiting == 0:
                self._idle.set()

    @staticmethod
    def _settle(batch: list[_Waiting], outcomes: list[Exception | None]) -> None:
        failed = [(waiting, error) for waiting, error in zip(batch, outcomes) if error is not None]
        if failed:
            first_error = failed[0][1]
            log.warning(
                "%d of %d tickets not stored (%s): %s; ids %s",
                len(failed), len(batch), type(first_error).__name__, first_error,
                [waiting.ticket.id for waiting, _ in failed[:5]],
            )
        for waiting, error in zip(batch, outcomes):
            if waiting.on_settled is not None:
                waiting.on_settled()
            if waiting.stored.done():
                continue
            if error is None:
                waiting.stored.set_result(None)
            else:
                waiting.stored.set_exception(error)
                # Mark as retrieved even if the waiting handler is gone.
                waiting.stored.exception()

    async def close(self) -> None:
        """Refuse new tickets and wait until every admitted one is stored or failed."""
        self._closing = True
        await self._idle.wait()


def replay_retry_delay(failures: int, *, interval: float) -> float:
    """Seconds before the next replay attempt after `failures` failures in a row that
    were not PostgreSQL being down (a full disk, a bug): doubling from `interval`, at
    most REPLAY_RETRY_MAX_SECONDS, so a lasting fault is retried without filling the log."""
    if failures <= 0:
        return interval
    return min(REPLAY_RETRY_MAX_SECONDS, interval * 2 ** (failures - 1))


REPLAY_RETRY_MAX_SECONDS = 10.0


class DurableStore:
    """Where a batch goes: PostgreSQL, or the spool while PostgreSQL cannot take them.

    Until the database is confirmed (it answers, every migration is applied and the
    spool is known to be for it), and after PostgreSQL refuses a batch, the store is in
    spool mode: batches go straight to the spool (no waiting on a database that is
    down) until the replayer has moved everything back and PostgreSQL answers again.
    A batch the spool cannot take goes to PostgreSQL if it is confirmed: a full or
    broken spool never refuses a ticket that PostgreSQL would take. With no spool
    (MYTICKET_SPOOL_MAX_BYTES=0) a refused batch fails, and its requests are answered 503.
    """

    def __init__(
        self,
        repository: Repository,
        spool: Spool | None,
        metrics: Metrics,
        *,
        prepare_database: Callable[[], Awaitable[DatabaseIdentity]],
        replay_batch: int = 500,
        replay_batch_max_bytes: int = DEFAULT_BATCH_MAX_BYTES,
    ):
        self._repository = repository
        self._spool = spool
        self._metrics = metrics
        self._prepare_database = prepare_database
        self._replay_batch = replay_batch
        self._replay_batch_max_bytes = replay_batch_max_bytes
        self._spool_mode = False
        self._replay_needed = asyncio.Event()
        # Set once PostgreSQL answered, its migrations are applied and the spool is checked.
        self.database_confirmed = asyncio.Event()
        # Why the database is not confirmed yet, for /ready.
        self.database_problem: str | None = "not checked yet"

    @property
    def spooling(self) -> bool:
        """Whether the next batch goes to the spool first."""
        return self._spool is not None and (self._spool_mode or not self.database_confirmed.is_set())

    async def confirm_database(self, *, at_start: bool = False) -> None:
        """Apply missing migrations, learn which database this is and check the spool is
        for it. A spool holding tickets for another database raises ForeignSpool at start
        (the service refuses to start); later it is reported, never replayed, and
        tickets go to PostgreSQL directly."""
        try:
            identity = await self._prepare_database()
        except DatabaseUnavailable as exc:
            self.database_problem = f"unavailable: {exc.reason}"
            raise
        if self._spool is not None:
            try:
                foreign = await self._spool.claim(identity)
            except SpoolUnavailable as exc:  # PostgreSQL takes the tickets; /ready shows the problem
                self._spool.problem = str(exc)
                log.error("%s", exc)
                foreign = None
            if foreign is not None:
                if at_start:
                    raise ForeignSpool(foreign)
                log.error("%s: they are not replayed here; start a service with that database's "
                          "DATABASE_URL to replay them", foreign)
        self.database_problem = None
        if at_start:
            log.info("database confirmed: %s", identity)
        else:  # the end of the warning logged at a start without PostgreSQL
            log.warning("PostgreSQL answers: %s confirmed, migrations applied; replaying the spool", identity)
        self.database_confirmed.set()

    async def __call__(self, tickets: Sequence[IncomingTicket]) -> None:
        if self.spooling:
            assert self._spool is not None
            try:
                await self._spool_batch(tickets)
                return
            except SpoolUnavailable as exc:
                if not self.database_confirmed.is_set():
                    raise
                log.warning("spool refused a batch of %d tickets (%s); trying PostgreSQL", len(tickets), exc)
            await self._insert_halving_on_timeout(tickets)
            return
        try:
            await self._insert_halving_on_timeout(tickets)
            return
        except DatabaseUnavailable as exc:
            if self._spool is None:
                raise
            if not self._spool_mode:
                log.warning("PostgreSQL refused a batch (%s); spooling locally until it answers", exc)
            self._spool_mode = True
        await self._spool_batch(tickets)

    async def _spool_batch(self, tickets: Sequence[IncomingTicket]) -> None:
        assert self._spool is not None
        await self._spool.write(tickets)
        self._metrics.count(self._metrics.tickets_spooled, amount=len(tickets))
        log.debug("spooled %d tickets: %s", len(tickets), [ticket.id for ticket in tickets])
        self._replay_needed.set()

    async def _insert_halving_on_timeout(self, tickets: Sequence[IncomingTicket]) -> None:
        """Insert a batch; one that runs past the timeout is too big, not a sign of an
        outage, so it is inserted in two halves, and its second half halved again while
        it times out. A first half that times out too means the database itself is slow
        or gone: that is raised as unavailability, after two timeouts rather than a whole
        binary search of them. A half committed before a later one fails is spooled again
        with the batch, which replay's ON CONFLICT DO NOTHING makes harmless.
        """
        try:
            await self._insert(tickets)
        except DatabaseUnavailable as exc:
            if len(tickets) < 2 or not is_statement_timeout(exc):
                raise
            log.warning(
                "batch of %d tickets (%d bytes) ran past the database timeout; storing it in two halves",
                len(tickets), sum(len(ticket.body) for ticket in tickets),
            )
            middle = len(tickets) // 2
            await self._insert(tickets[:middle])
            await self._insert_halving_on_timeout(tickets[middle:])

    async def _insert(self, tickets: Sequence[IncomingTicket]) -> None:
        try:
            await self._repository.store_tickets(tickets=tickets)
        except asyncio.CancelledError as cancellation:
            if not cancelled_by_the_server(cancellation):
                raise
            raise DatabaseUnavailable(
                f"insert_tickets: statement cancelled by the server ({QUERY_CANCELED})"
            ) from cancellation.__context__

    async def replay(self, stop: asyncio.Event | None = None) -> int:
        """Move spooled tickets into PostgreSQL, oldest first, until the spool is empty or
        `stop` is set; return how many moved.

        A batch is deleted from the spool only after PostgreSQL committed it; replaying
        the same ids twice is harmless (ON CONFLICT DO NOTHING on the delivery id).
        Nothing is replayed before the database is confirmed to be the spool's.
        """
        if not self.database_confirmed.is_set():
            await self.confirm_database()
        if self._spool is None:
            return 0
        moved = 0
        while stop is None or not stop.is_set():
            batch = await self._spool.oldest(self._replay_batch, max_bytes=self._replay_batch_max_bytes)
            if not batch:
                break
            await self._insert_halving_on_timeout(batch)
            try:
                await self._spool.delete([ticket.id for ticket in batch])
            except SpoolUnavailable as exc:
                # They are in PostgreSQL: the spool skips them from now on and deletes them
                # once it can (a full disk), so the replay goes on with the next ones.
                self._metrics.replay_failed("spool_unavailable")
                log.warning("replayed %d tickets but could not delete them from the spool (%s); "
                            "going on past them", len(batch), exc)
            moved += len(batch)
            self._metrics.count(self._metrics.tickets_replayed, amount=len(batch))
            log.debug("replayed %d spooled tickets: %s", len(batch), [ticket.id for ticket in batch])
        if self._spool_mode and (stop is None or not stop.is_set()):
            await self._repository.applied_migrations()  # PostgreSQL answers: leave spool mode
            log.warning("PostgreSQL answers again; spool drained, back to direct writes")
            self._spool_mode = False
        if moved:
            log.info("replayed %d spooled tickets into PostgreSQL", moved)
        return moved

    async def replay_forever(self, stop: asyncio.Event, *, interval: float = 1.0) -> None:
        """Replay at start (a spool left by a crash), after spooling, and every `interval`
        seconds, until `stop`. It never dies: each failure is logged, counted in
        myticket_spool_replay_failures_total and retried, at once when PostgreSQL is
        merely down (so spool mode ends with the outage), with backoff otherwise."""
        failures = 0
        while not stop.is_set():
            try:
                await self.replay(stop)
                failures = 0
            except DatabaseUnavailable as exc:
                failures = 0
                self._metrics.replay_failed("database_unavailable")
                log.debug("replay postponed, database unavailable: %s", exc)
            except SpoolUnavailable as exc:
                failures += 1
                self._metrics.replay_failed("spool_unavailable")
                log.warning("replay failed, retrying: %s", exc)
            except Exception:
                failures += 1
                self._metrics.replay_failed("unexpected")
                log.exception("replay failed unexpectedly, retrying")
            await self._refresh_gauges()
            self._replay_needed.clear()
            waits = [asyncio.ensure_future(stop.wait())]
            if failures == 0:  # after a failure, new spooled batches do not cut the backoff short
                waits.append(asyncio.ensure_future(self._replay_needed.wait()))
            try:
                await asyncio.wait(
                    waits, timeout=replay_retry_delay(failures, interval=interval), return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for waiting in waits:
                    waiting.cancel()

    async def _refresh_gauges(self) -> None:
        if self._spool is None:
            return
        try:
            self._metrics.set_spool(
                tickets=await self._spool.count(),
                size=await self._spool.size(),
                quarantined_files=len(await self._spool.quarantined()),
            )
        except Exception:  # the gauges must not stop the replayer either
            log.exception("spool gauges not refreshed")
