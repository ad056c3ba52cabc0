"""Group commit: many concurrent POSTs, one INSERT and one commit per batch.

`submit()` returns only once the batch holding the ticket has been stored by
`store_batch` (committed in PostgreSQL, or spooled), and raises that batch's error
otherwise: nothing is acknowledged from memory. When nothing is in flight a ticket is
flushed at once (no added latency when idle); while flushes are in flight, arrivals
accumulate and leave together as the next batch. The number of tickets waiting is
bounded: past it, `submit()` refuses with `Overloaded` instead of queueing without limit.
`store.DurableStore` decides where a batch goes: PostgreSQL, or the local spool.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

from .domain import IncomingTicket

log = logging.getLogger(__name__)

StoreBatch = Callable[[Sequence[IncomingTicket]], Awaitable[None]]


class Overloaded(Exception):
    """Too many tickets are waiting for a commit; the sender should retry later."""


class ShuttingDown(Exception):
    """The service is stopping and admits no new ticket."""


class GroupCommitIngest:
    def __init__(
        self,
        store_batch: StoreBatch,
        *,
        batch_max_size: int,
        max_waiting: int,
        max_flushes_in_flight: int = 1,
        on_batch_stored: Callable[[int], None] | None = None,
    ) -> None:
        self._store_batch = store_batch
        self._batch_max_size = batch_max_size
        self._max_waiting = max_waiting
        self._max_flushes_in_flight = max_flushes_in_flight
        self._on_batch_stored = on_batch_stored
        self._queue: deque[tuple[IncomingTicket, asyncio.Future[None]]] = deque()
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

    async def submit(self, ticket: IncomingTicket) -> None:
        """Wait until `ticket` is stored; raise Overloaded, ShuttingDown or the store's error."""
        if self._closing:
            raise ShuttingDown()
        if self._waiting >= self._max_waiting:
            raise Overloaded()
        stored = asyncio.get_running_loop().create_future()
        self._queue.append((ticket, stored))
        self._waiting += 1
        self._idle.clear()
        self._start_flushes()
        # If the client goes away and this wait is cancelled, the ticket stays in its
        # batch and is committed all the same: the batch does not depend on the waiter.
        await stored

    def _start_flushes(self) -> None:
        while self._queue and self._flushes_in_flight < self._max_flushes_in_flight:
            batch = [self._queue.popleft() for _ in range(min(self._batch_max_size, len(self._queue)))]
            self._flushes_in_flight += 1
            task = asyncio.get_running_loop().create_task(self._flush(batch))
            self._flush_tasks.add(task)
            task.add_done_callback(self._flush_tasks.discard)

    async def _flush(self, batch: list[tuple[IncomingTicket, asyncio.Future[None]]]) -> None:
        try:
            await self._store_batch([ticket for ticket, _ in batch])
        except BaseException as exc:
            log.warning(
                "batch of %d tickets not stored (%s): %s; first ids %s",
                len(batch), type(exc).__name__, exc, [ticket.id for ticket, _ in batch[:5]],
            )
            for _, stored in batch:
                if not stored.done():
                    stored.set_exception(exc if isinstance(exc, Exception) else ShuttingDown())
                    # Mark as retrieved even if the waiting handler is gone.
                    stored.exception()
            if not isinstance(exc, Exception):
                raise
        else:
            if self._on_batch_stored is not None:
                self._on_batch_stored(len(batch))
            for _, stored in batch:
                if not stored.done():
                    stored.set_result(None)
        finally:
            self._waiting -= len(batch)
            self._flushes_in_flight -= 1
            self._start_flushes()
            if self._waiting == 0:
                self._idle.set()

    async def close(self) -> None:
        """Refuse new tickets and wait until every admitted one is stored or failed."""
        self._closing = True
        await self._idle.wait()
