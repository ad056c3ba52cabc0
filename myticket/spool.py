"""The local spool: where tickets go, durably, while PostgreSQL cannot take them.

Many senders never retry, so a 503 while the database restarts would lose their
tickets. Instead, a batch that PostgreSQL refuses is written to a SQLite file (WAL,
synchronous=FULL, one transaction per batch) before its requests are answered 202.
SQLite is crash-safe, torn-write-safe and safe for several processes sharing one
file, which a home-made format would have to prove. The replayer moves spooled
tickets into PostgreSQL as soon as it answers again (ON CONFLICT DO NOTHING on the
delivery id, so a replay is idempotent) and deletes only what PostgreSQL committed.

All SQLite calls run on one dedicated thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

from .repository import SQL_DIR, IncomingTicket, load_queries

log = logging.getLogger(__name__)

SPOOL_FILE = "spool.sqlite3"
SPOOL_SQL_DIR = SQL_DIR / "spool"


class SpoolUnavailable(Exception):
    """The spool is full or cannot be written: the ticket is not acknowledged."""


class Spool:
    def __init__(self, directory: Path, *, max_bytes: int) -> None:
        self.directory = directory
        self.path = directory / SPOOL_FILE
        self.max_bytes = max_bytes
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool")
        self._connection: sqlite3.Connection | None = None
        self.problem: str | None = None
        self._queries = load_queries(SPOOL_SQL_DIR)

    # --- on the spool thread -------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self.path, timeout=10, isolation_level=None)
            try:
                connection.execute(self._queries["use_write_ahead_log"])
                connection.execute(self._queries["sync_fully"])
                connection.execute(self._queries["create_spool_table"])
            except sqlite3.Error:
                connection.close()
                raise
            self._connection = connection
        return self._connection

    def _size(self) -> int:
        """Bytes the spooled tickets occupy: pages in use, not the file's length.

        The file keeps its length after a replay deletes its rows (freed pages are
        reused, not returned), so its length would keep the cap half-spent forever.
        """
        try:
            connection = self._connect()
            page_size, pages, free_pages = (
                connection.execute(self._queries[name]).fetchone()[0]
                for name in ("page_size", "page_count", "free_page_count")
            )
        except (sqlite3.Error, OSError):  # not reachable: `problem` says why
            self._reset()
            return 0
        return (pages - free_pages) * page_size

    def _write(self, tickets: Sequence[IncomingTicket]) -> None:
        try:
            connection = self._connect()
            incoming = sum(len(ticket.body) for ticket in tickets)
            if self._size() + incoming > self.max_bytes:
                raise SpoolUnavailable(f"spool full ({self.max_bytes} bytes, MYTICKET_SPOOL_MAX_BYTES)")
            with connection:  # one transaction, committed (and fsynced) on exit
                connection.execute(self._queries["begin_write"])
                connection.executemany(
                    self._queries["spool_ticket"],
                    [(t.id, t.received_at.isoformat(), t.content_type, t.body) for t in tickets],
                )
        except (sqlite3.Error, OSError) as exc:
            self._reset()
            self.problem = f"{type(exc).__name__}: {exc}"
            raise SpoolUnavailable(f"spool not writable: {exc}") from exc
        self.problem = None

    def _oldest(self, limit: int) -> list[IncomingTicket]:
        try:
            rows = self._connect().execute(self._queries["oldest_spooled"], (limit,)).fetchall()
        except (sqlite3.Error, OSError) as exc:
            self._reset()
            raise SpoolUnavailable(f"spool not readable: {exc}") from exc
        return [IncomingTicket(id, datetime.fromisoformat(received), content_type, bytes(body))
                for id, received, content_type, body in rows]

    def _delete(self, ids: Sequence[str]) -> None:
        connection = self._connect()
        with connection:
            connection.execute(self._queries["begin_write"])
            connection.executemany(self._queries["unspool_ticket"], [(ticket_id,) for ticket_id in ids])

    def _count(self) -> int:
        try:
            return self._connect().execute(self._queries["count_spooled"]).fetchone()[0]
        except (sqlite3.Error, OSError) as exc:
            self._reset()
            self.problem = f"{type(exc).__name__}: {exc}"
            return 0

    def _reset(self) -> None:
        if self._connection is not None:
            try:
                self._connection.close()
            finally:
                self._connection = None

    # --- from the event loop -------------------------------------------------
    async def _run(self, function, *args):
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    async def write(self, tickets: Sequence[IncomingTicket]) -> None:
        """Store the batch durably, or raise SpoolUnavailable."""
        await self._run(self._write, tickets)

    async def oldest(self, limit: int) -> list[IncomingTicket]:
        return await self._run(self._oldest, limit)

    async def delete(self, ids: Sequence[str]) -> None:
        await self._run(self._delete, ids)

    async def count(self) -> int:
        return await self._run(self._count)

    async def size(self) -> int:
        return await self._run(self._size)

    async def close(self) -> None:
        await self._run(self._reset)
        self._executor.shutdown(wait=True)
