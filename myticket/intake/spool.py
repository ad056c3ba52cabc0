"""The local spool: where tickets go, durably, while PostgreSQL cannot take them.

Many senders never retry, so a 503 while the database restarts would lose their
tickets. Instead, a batch that PostgreSQL refuses is written to a SQLite file (WAL,
synchronous=FULL, one transaction per batch) before its requests are answered 202.
SQLite is crash-safe, torn-write-safe and safe for several processes sharing one
file, which a home-made format would have to prove. The replayer moves spooled
tickets into PostgreSQL as soon as it answers again (ON CONFLICT DO NOTHING on the
delivery id, so a replay is idempotent) and deletes only what PostgreSQL committed.

A spool belongs to one database: it records the database's URL (password masked)
and, once PostgreSQL has answered, its system identifier and name; tickets are never
written into, nor replayed from, a spool that holds tickets for another database.
A spool file SQLite cannot read (corrupt) is moved aside under a timestamped name
and a fresh one takes its place, so one damaged file never stops the service.

All SQLite calls run on one dedicated thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

from ..core.domain import DatabaseIdentity, IncomingTicket
from ..core.readiness import failure_still_stands
from ..db.resources import SPOOL_SQL_DIRECTORY, load_queries
from .spool_file import SpoolFile, SpoolUnavailable, is_corruption
from .spool_ownership import Ownership, SpoolOwner, ownership

log = logging.getLogger(__name__)

# Below this much free space on the spool's disk, /ready does not count on the spool:
# a write needs room for its bodies twice (WAL) and a few pages.
MIN_FREE_DISK_BYTES = 256 * 1024
# Pages a write may touch beyond its bodies' own: b-tree parents, the id index, the
# AUTOINCREMENT counter, the file header.
WRITE_MARGIN_PAGES = 16


class Spool:
    """The spool's public API, from the event loop: each call runs on the spool's own
    thread. `problem` says why the spool last failed (None once a write goes through);
    only the spool's own methods change it."""

    def __init__(self, directory: Path, *, max_bytes: int, database_url: str = "") -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.database_url = database_url
        # The database this service confirmed it writes to; None until PostgreSQL answered.
        self.identity: DatabaseIdentity | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool")
        self._queries = load_queries(SPOOL_SQL_DIRECTORY)
        self._file = SpoolFile(directory, self._queries)
        self.path = self._file.path
        self._problem: str | None = None
        # When `_problem` is an I/O failure (not a foreign spool): when it happened, and
        # the disk's free bytes then, so that /ready can tell when it has cleared.
        self._io_failure: tuple[float, int | None] | None = None
        # Spool positions up to this one are committed in PostgreSQL but their delete
        # failed (a full disk); and the positions of the batch last read for replay.
        self._replayed_through = 0
        self._positions: dict[str, int] = {}
        self._last_count = 0

    @property
    def problem(self) -> str | None:
        """Why the spool cannot be used now, as its last failure said; None while it works."""
        return self._problem

    # --- on the spool thread -------------------------------------------------
    def _owner(self, connection: sqlite3.Connection) -> SpoolOwner | None:
        row = connection.execute(self._queries["spool_owner"]).fetchone()
        if row is None:
            return None
        url, system_identifier, name = row
        identity = DatabaseIdentity(system_identifier, name) if system_identifier is not None else None
        return SpoolOwner(url, identity)

    def _settle_owner(self, connection: sqlite3.Connection) -> SpoolOwner | None:
        """Within a write transaction: record us as owner where we may; return the owner
        of tickets that are not ours (None when the spool is ours)."""
        owner = self._owner(connection)
        verdict, new_owner = self._ownership(connection, owner)
        if verdict is Ownership.FOREIGN:
            return owner
        if verdict is Ownership.RECORD and new_owner is not None:
            identity = new_owner.identity
            connection.execute(
                self._queries["record_spool_owner"],
                (
                    new_owner.database_url,
                    identity.system_identifier if identity else None,
                    identity.database_name if identity else None,
                    datetime.now(timezone.utc).isoformat(),
                ),
            )
        return None

    def _foreign_message(self, owner: SpoolOwner, connection: sqlite3.Connection) -> str:
        count = connection.execute(self._queries["count_spooled"], (0,)).fetchone()[0]
        ours = SpoolOwner(self.database_url, self.identity)
        return f"spool {self.path} holds {count} tickets for {owner}, not for {ours}"

    def _claim(self) -> str | None:
        """Make the spool ours if it may be; return why not (a foreign spool), else None."""
        connection = self._file.connection()
        with connection:
            connection.execute(self._queries["begin_write"])
            foreign = self._settle_owner(connection)
            return None if foreign is None else self._foreign_message(foreign, connection)

    def _write(self, tickets: Sequence[IncomingTicket]) -> None:
        connection = self._file.connection()
        incoming = sum(len(ticket.body) for ticket in tickets)
        page_size = connection.execute(self._queries["page_size"]).fetchone()[0]
        # Until a checkpoint the WAL holds a copy of what the file will hold: twice the bodies.
        needed = 2 * incoming + WRITE_MARGIN_PAGES * page_size
        if self._file.bytes_on_disk() + needed > self.max_bytes:
            raise _SpoolFull(f"spool full ({self.max_bytes} bytes on disk at most, MYTICKET_SPOOL_MAX_BYTES)")
        with connection:  # one transaction, committed (and fsynced) on exit
            connection.execute(self._queries["begin_write"])
            foreign = self._settle_owner(connection)
            if foreign is not None:
                raise _Refused(self._foreign_message(foreign, connection))
            connection.executemany(
                self._queries["spool_ticket"],
                [(t.id, t.received_at.isoformat(), t.content_type, t.body) for t in tickets],
            )

    def _oldest(self, limit: int, max_bytes: int) -> list[IncomingTicket]:
        """The next tickets to replay (at most `limit`, and `max_bytes` of bodies but at
        least one), if the spool is ours and our database is confirmed.

        Read in a read transaction when the owner is already recorded, so that a full
        disk does not stop the replay; tickets up to `_replayed_through` are in
        PostgreSQL already (their delete failed) and are skipped, not replayed forever.
        """
        if self.identity is None:
            return []
        connection = self._file.connection()
        self._forget_replayed(connection)
        with connection:  # one transaction: the owner checked is the owner of these rows
            connection.execute(self._queries["begin_read"])
            verdict, _ = self._ownership(connection, self._owner(connection))
            if verdict is Ownership.RECORD:  # the owner must be written first: a write transaction
                connection.rollback()
                connection.execute(self._queries["begin_write"])
                verdict = Ownership.FOREIGN if self._settle_owner(connection) is not None else Ownership.KEEP
            if verdict is Ownership.FOREIGN:
                self._problem = self._foreign_message(self._owner(connection), connection)
                return []
            rows = connection.execute(
                self._queries["oldest_spooled"], (self._replayed_through, limit, max_bytes)
            ).fetchall()
        self._positions = {id: position for position, id, _, _, _ in rows}
        return [IncomingTicket(id, datetime.fromisoformat(received), content_type, bytes(body))
                for _, id, received, content_type, body in rows]

    def _ownership(
        self, connection: sqlite3.Connection, owner: SpoolOwner | None
    ) -> tuple[Ownership, SpoolOwner | None]:
        holds_tickets = bool(connection.execute(self._queries["holds_tickets"]).fetchone()[0])
        return ownership(owner, holds_tickets=holds_tickets, database_url=self.database_url, identity=self.identity)

    def _forget_replayed(self, connection: sqlite3.Connection) -> None:
        """Delete the replayed tickets whose delete failed; on failure, try again later."""
        if not self._replayed_through:
            return
        try:
            with connection:
                connection.execute(self._queries["begin_write"])
                connection.execute(self._queries["forget_replayed"], (self._replayed_through,))
        except sqlite3.OperationalError as exc:
            log.debug("spooled tickets already in PostgreSQL still cannot be deleted (%s)", exc)
            return
        log.info("deleted the spooled tickets that were already in PostgreSQL")
        self._replayed_through = 0

    def _delete(self, ids: Sequence[str]) -> None:
        """Forget tickets PostgreSQL committed. If the delete fails (a full disk), the
        replay skips them from now on, and their delete is tried again before each read."""
        connection = self._file.connection()
        try:
            with connection:
                connection.execute(self._queries["begin_write"])
                connection.executemany(self._queries["unspool_ticket"], [(ticket_id,) for ticket_id in ids])
        except sqlite3.OperationalError:
            replayed = [self._positions[ticket_id] for ticket_id in ids if ticket_id in self._positions]
            self._replayed_through = max([self._replayed_through, *replayed])
            raise
        # Give the space back: freed pages to the file system, the WAL truncated. Both
        # only reclaim space (SQLite skips the checkpoint while another process reads),
        # so their failure, on a full disk say, costs nothing but space for now.
        try:
            # executescript: it steps the pragma to completion (execute frees one page).
            connection.executescript(self._queries["release_free_pages"])
            connection.execute(self._queries["checkpoint_and_truncate_wal"]).fetchall()
        except sqlite3.Error as exc:
            if is_corruption(exc):
                raise
            log.debug("spool space not reclaimed yet: %s", exc)

    def _count(self) -> int:
        """Tickets waiting for PostgreSQL (not those in it already whose delete failed)."""
        connection = self._file.connection()
        return connection.execute(self._queries["count_spooled"], (self._replayed_through,)).fetchone()[0]

    def _claimed(self, identity: DatabaseIdentity | None) -> str | None:
        """`claim`'s work, on whichever thread runs it: a failure is the spool's problem."""
        self.identity = identity
        try:
            foreign = self._file.guarded("readable", self._claim)
        except SpoolUnavailable as exc:  # PostgreSQL takes the tickets meanwhile; /ready shows why
            self._failed(exc)
            raise
        self._problem, self._io_failure = foreign, None
        return foreign

    # --- from the event loop -------------------------------------------------
    async def _run(self, function, *args):
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    async def claim(self, identity: DatabaseIdentity) -> str | None:
        """Confirm the database this service writes to: the spool becomes ours if it
        holds no tickets for another database. Return why it did not (None if it did);
        SpoolUnavailable when the spool cannot be read, which `problem` then says."""
        return await self._run(self._claimed, identity)

    def claim_blocking(self, identity: DatabaseIdentity | None) -> str | None:
        """`claim` on the calling thread, for a caller without an event loop (the command
        line, before serving). The connection it opened is closed again: it belongs to
        this thread, and the spool's own thread opens its own."""
        try:
            return self._claimed(identity)
        finally:
            self._file.close()

    async def write(self, tickets: Sequence[IncomingTicket]) -> None:
        """Store the batch durably, or raise SpoolUnavailable."""
        try:
            await self._run(self._file.guarded, "writable", self._write, tickets)
        except _SpoolFull:
            raise
        except _Refused as exc:
            self._problem, self._io_failure = str(exc), None
            raise
        except SpoolUnavailable as exc:
            self._failed(exc)
            raise
        self._problem, self._io_failure = None, None

    async def oldest(self, limit: int, *, max_bytes: int = 2**62) -> list[IncomingTicket]:
        """The next tickets to replay: a batch bounded in count and in body bytes, so that
        a spool of large tickets is replayed without loading hundreds of them at once."""
        return await self._run(self._file.guarded, "readable", self._oldest, limit, max_bytes)

    async def delete(self, ids: Sequence[str]) -> None:
        await self._run(self._file.guarded, "writable", self._delete, ids)
        self._problem, self._io_failure = None, None  # a write went through: whatever failed before works again

    async def count(self) -> int:
        """Tickets waiting for PostgreSQL. When the spool cannot be read, the last count
        read (never 0 for a spool that held tickets: an alert on it must still fire), with
        `problem` saying why."""
        try:
            self._last_count = await self._run(self._file.guarded, "readable", self._count)
        except SpoolUnavailable as exc:
            self._failed(exc)
        return self._last_count

    async def size(self) -> int:
        """Bytes the spool occupies on disk, its WAL and shared memory included."""
        return await self._run(self._file.bytes_on_disk)

    def _failed(self, exc: SpoolUnavailable) -> None:
        self._problem = str(exc)
        self._io_failure = (time.monotonic(), self._free_bytes())

    def _free_bytes(self) -> int | None:
        try:
            disk = os.statvfs(self.directory)
        except OSError:
            return None
        return disk.f_bavail * disk.f_frsize

    def current_problem(self) -> str | None:
        """Why the spool cannot take a ticket now, for /ready. Tickets of another
        database: until a claim says otherwise. An I/O failure (a full disk, a directory
        made read-only): while it is recent (`failure_still_stands`) and the disk has not
        gained space since, so that it leaves /ready when it clears, not at the next
        write, which a load balancer reading 503 would never send. Then: whether the
        disk is nearly full now."""
        if self._problem is not None:
            if self._io_failure is None:
                return self._problem
            failed_at, free_then = self._io_failure
            if failure_still_stands(failed_at=failed_at, now=time.monotonic(),
                                    free_then=free_then, free_now=self._free_bytes()):
                return self._problem
        return self.space_problem()

    def space_problem(self) -> str | None:
        """Why the spool's disk cannot take a ticket now (nearly full), else None. Asked
        by /ready, which must not say `spooling` when a write would fail: a failed write
        is remembered in `problem` only until a later one succeeds, and a fresh process
        has not tried any yet."""
        try:
            disk = os.statvfs(self.directory)
        except OSError:  # not created yet: the first write creates it
            return None
        free = disk.f_bavail * disk.f_frsize
        if free < MIN_FREE_DISK_BYTES:
            return f"spool disk nearly full: {free} bytes free in {self.directory}"
        return None

    async def quarantined(self) -> list[str]:
        return await self._run(self._file.quarantined_files)

    async def close(self) -> None:
        await self._run(self._file.close)
        self._executor.shutdown(wait=True)


class _SpoolFull(SpoolUnavailable):
    """The cap is reached: the spool itself is fine."""


class _Refused(SpoolUnavailable):
    """The spool holds tickets for another database."""


def claim_now(directory: Path, *, max_bytes: int, database_url: str, identity: DatabaseIdentity | None) -> str | None:
    """`Spool.claim`, synchronously, for the command line before serving: why the spool
    at `directory` is foreign to this database (None when it is ours or empty)."""
    return Spool(directory, max_bytes=max_bytes, database_url=database_url).claim_blocking(identity)
