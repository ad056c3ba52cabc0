"""Where an acknowledged ticket goes: PostgreSQL, or the local spool while PostgreSQL
cannot take it; and the replayer that moves spooled tickets back, owned by the store
(`start` runs it, `close` stops it between two batches and closes the spool).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ..config import DEFAULT_BATCH_MAX_BYTES
from ..core.database_errors import DatabaseUnavailable, StatementTimeout
from ..core.domain import DatabaseIdentity, IncomingTicket
from ..core.events import first_of
from ..core.readiness import failure_still_stands
from ..telemetry.metrics import Metrics
from ..db.repository import Repository
from .spool import Spool, SpoolUnavailable
from .spool_ownership import ForeignSpool

log = logging.getLogger(__name__)

DEFAULT_REPLAY_BATCH = 500


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
        replay_batch: int = DEFAULT_REPLAY_BATCH,
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
        self._stop_replay = asyncio.Event()
        self._replayer: asyncio.Task[None] | None = None
        # Why PostgreSQL refused the last batch written to it, and when (monotonic);
        # None once a batch gets through. For /ready (`database_refused_writes`).
        self._refused: tuple[str, float] | None = None

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

    @property
    def spool(self) -> Spool | None:
        return self._spool

    def database_refused_writes(self) -> str | None:
        """Why PostgreSQL refused the last batch written to it, while that still stands
        (core.readiness.failure_still_stands): it may answer /ready's reads and refuse
        every write (a full disk, read-only)."""
        if self._refused is None:
            return None
        reason, refused_at = self._refused
        return reason if failure_still_stands(failed_at=refused_at, now=time.monotonic()) else None

    async def spool_state(self) -> dict[str, Any] | None:
        """What /ready reports of the spool (None without one): whether the next
        ticket goes to it, what it holds, its size on disk, any problem, and the
        unreadable files moved aside."""
        if self._spool is None:
            return None
        return {
            "mode": self.spooling,
            "tickets": await self._spool.count(),
            "bytes": await self._spool.size(),
            "problem": self._spool.current_problem(),
            "quarantined": await self._spool.quarantined(),
        }

    def start(self, *, interval: float = 1.0) -> None:
        """Run the replayer (`replay_forever`) until `close`."""
        self._replayer = asyncio.create_task(self.replay_forever(self._stop_replay, interval=interval),
                                             name="spool-replayer")

    async def close(self) -> None:
        """Stop the replayer between two batches (what is still spooled is replayed at
        the next start), then close the spool."""
        self._stop_replay.set()
        if self._replayer is not None:
            await self._replayer
        if self._spool is not None:
            await self._spool.close()

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
            await self._stored(tickets)
        except StatementTimeout:
            if len(tickets) < 2:
                raise
            log.warning(
                "batch of %d tickets (%d bytes) ran past the database timeout; storing it in two halves",
                len(tickets), sum(len(ticket.body) for ticket in tickets),
            )
            middle = len(tickets) // 2
            await self._stored(tickets[:middle])
            await self._insert_halving_on_timeout(tickets[middle:])

    async def _stored(self, tickets: Sequence[IncomingTicket]) -> None:
        """Insert a batch, noting for /ready whether PostgreSQL took it."""
        try:
            await self._repository.store_tickets(tickets=tickets)
        except DatabaseUnavailable as exc:
            self._refused = (exc.reason, time.monotonic())
            raise
        self._refused = None

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
            # After a failure, new spooled batches do not cut the backoff short.
            wake_ups = (stop, self._replay_needed) if failures == 0 else (stop,)
            await first_of(*wake_ups, timeout=replay_retry_delay(failures, interval=interval))

    async def _refresh_gauges(self) -> None:
        if self._spool is None:
            return
        try:
            self._metrics.set_spool(
                tickets=await self._spool.count(),
                size=await self._spool.size(),
                quarantined_files=len(await self._spool.quarantined()),
                spooling=self.spooling, max_bytes=self._spool.max_bytes,
            )
        except Exception:  # the gauges must not stop the replayer either
            log.exception("spool gauges not refreshed")
