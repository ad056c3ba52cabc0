"""Group commit: many concurrent POSTs, one INSERT and one commit per batch.

`submit()` returns only once the batch holding the ticket has been stored by
`store_batch` (committed in PostgreSQL, or spooled), and raises that batch's error
otherwise: nothing is acknowledged from memory. When nothing is in flight a ticket is
flushed at once (no added latency when idle); while flushes are in flight, arrivals
accumulate and leave together as the next batch. The number of tickets waiting is
bounded: past it, `submit()` refuses with `Overloaded` instead of queueing without limit,
and one sender may have at most its share of them waiting (past it, `SenderOverShare`
for that sender only). A batch is bounded in tickets and in body bytes (always at least
one ticket), and filled fairly: each sender has its own queue, and each batch is one
round of deficit round robin over them (`fair_queue`), so a sender's ticket neither
waits behind another sender's backlog nor behind a long batch of it.
A batch that fails for another reason than unavailability is split in halves, down to
single tickets, so that only the ticket that causes the failure gets the error.
`store.DurableStore` decides where a batch goes: PostgreSQL, or the local spool.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence

from ..core.database_errors import DatabaseUnavailable
from ..core.domain import IncomingTicket
from .fair_queue import FairQueue
from .shares import SenderShares, Shortage
from .spool import SpoolUnavailable

log = logging.getLogger(__name__)

StoreBatch = Callable[[Sequence[IncomingTicket]], Awaitable[None]]


class Overloaded(Exception):
    """Too many tickets are waiting for a commit; the sender should retry later."""


class SenderOverShare(Exception):
    """This sender already has its share of the waiting tickets; it should retry later
    (the other senders are not refused)."""


# The sender of tickets submitted without one (tools and tests that do not care).
ANY_SENDER = ""
# Bytes a sender's queue may add to a batch (a batch is one round of the senders): one
# ticket of the default body limit. A batch then holds about this much of a greedy
# sender's tickets and commits quickly, so a polite ticket behind it waits little; a
# lone sender of small tickets still fills batch_max_size tickets per batch. The app
# passes MYTICKET_MAX_BODY_BYTES.
DEFAULT_FAIR_QUANTUM_BYTES = 1024 * 1024


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


class _Waiting:
    """A ticket admitted for the next batches, the future its handler awaits, and what
    to call once it is settled (stored or failed), whether or not the handler still waits."""

    __slots__ = ("ticket", "sender", "stored", "on_settled")

    def __init__(
        self, ticket: IncomingTicket, sender: str, stored: asyncio.Future[None], on_settled: Callable[[], None] | None
    ):
        self.ticket = ticket
        self.sender = sender
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
        sender_max_waiting: int | None = None,
        fair_quantum_bytes: int = DEFAULT_FAIR_QUANTUM_BYTES,
    ) -> None:
        self._store_batch = store_batch
        self._batch_max_size = batch_max_size
        self._batch_max_bytes = batch_max_bytes if batch_max_bytes is not None else float("inf")
        self._max_waiting = max_waiting
        self._max_flushes_in_flight = max_flushes_in_flight
        self._on_batch_stored = on_batch_stored
        self._queue: FairQueue[_Waiting] = FairQueue(fair_quantum_bytes)
        # Tickets admitted and not yet settled (queued or in a flush), per sender.
        self._shares = SenderShares(max_waiting, sender_max_waiting if sender_max_waiting is not None else max_waiting)
        self._flushes_in_flight = 0
        self._flush_tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def waiting(self) -> int:
        """Tickets admitted but not yet stored."""
        return self._shares.total

    def waiting_for(self, sender: str) -> int:
        """Tickets of `sender` admitted but not yet stored."""
        return self._shares.held(sender)

    async def submit(
        self, ticket: IncomingTicket, *, sender: str = ANY_SENDER, on_settled: Callable[[], None] | None = None
    ) -> None:
        """Wait until `ticket` is stored; raise Overloaded, SenderOverShare, ShuttingDown
        or the store's error.

        `on_settled` is called exactly once, whatever happens: at once when the ticket is
        refused, else when its batch is stored or failed, even if this wait was cancelled
        meanwhile (the ticket's bytes are held until then).
        """
        refusal: Exception | None = ShuttingDown() if self._closing else None
        if refusal is None:
            shortage = self._shares.take(sender, 1)
            if shortage is not None:
                refusal = SenderOverShare() if shortage is Shortage.SENDER_SHARE else Overloaded()
        if refusal is not None:
            if on_settled is not None:
                on_settled()
            raise refusal
        stored = asyncio.get_running_loop().create_future()
        self._queue.push(sender, _Waiting(ticket, sender, stored, on_settled), len(ticket.body))
        self._idle.clear()
        self._start_flushes()
        # If the client goes away and this wait is cancelled, the ticket stays in its
        # batch and is committed all the same: the batch does not depend on the waiter.
        await stored

    def _start_flushes(self) -> None:
        while self._queue and self._flushes_in_flight < self._max_flushes_in_flight:
            batch = self._queue.take_batch(max_items=self._batch_max_size, max_bytes=self._batch_max_bytes)
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
            for waiting in batch:
                self._shares.give_back(waiting.sender, 1)
            self._flushes_in_flight -= 1
            self._start_flushes()
            if self._shares.total == 0:
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
