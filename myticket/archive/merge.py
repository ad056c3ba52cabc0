"""The merge of a day archived again: the database's tickets and those only the day's
previous file holds, written in key order to the day's new file."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Sequence
from datetime import datetime

from .day_files import DayFileWriter, ExistingDayFile, KeptLine
from .format import encode_ticket
from ..core.domain import ArchivedTicket


class DayMerge:
    """Writes a day's tickets from the database, merged (by key) with those of the
    day's previous complete file when there is one: a ticket in both is written as the
    database has it (its outcome may have changed), one only in the file as its line
    was. Both sides come in key order and a page or batch at a time, so the day is
    never held whole."""

    def __init__(self, writer: DayFileWriter, old: ExistingDayFile | None, batch_tickets: int,
                 batch_bytes: int) -> None:
        self._writer = writer
        self._old = old
        self._batch_tickets = batch_tickets
        self._batch_bytes = batch_bytes
        self._buffered: collections.deque[KeptLine] = collections.deque()
        self._out: list[bytes] = []
        self._out_bytes = 0
        self.statuses: collections.Counter[str] = collections.Counter()
        self.database_statuses: collections.Counter[str] = collections.Counter()
        self.kept = 0  # tickets only the previous file held

    async def _next_kept(self) -> KeptLine | None:
        if not self._buffered and self._old is not None:
            batch = await asyncio.to_thread(self._old.batch, self._batch_tickets, self._batch_bytes)
            if batch:
                self._buffered.extend(batch)
            else:
                self._old = None
        return self._buffered[0] if self._buffered else None

    async def _emit(self, line: bytes, status: str) -> None:
        self._out.append(line)
        self._out_bytes += len(line)
        self.statuses[status] += 1
        if len(self._out) >= self._batch_tickets or self._out_bytes >= self._batch_bytes:
            await self._flush()

    async def _flush(self) -> None:
        if self._out:
            await asyncio.to_thread(self._writer.write, self._out)
            self._out, self._out_bytes = [], 0

    async def _keep_before(self, key: tuple[str, datetime] | None) -> None:
        """Write the previous file's tickets before `key` (all that are left: None)."""
        while (head := await self._next_kept()) is not None and (key is None or head.key < key):
            self._buffered.popleft()
            self.kept += 1
            await self._emit(head.line, head.status)
        if head is not None and head.key == key:
            self._buffered.popleft()  # the database's version replaces it

    async def add_page(self, page: Sequence[ArchivedTicket]) -> None:
        for ticket in page:
            await self._keep_before((ticket.id, ticket.received_at))
            self.database_statuses[ticket.status] += 1
            await self._emit(encode_ticket(ticket), ticket.status)
        await self._flush()

    async def finish(self) -> None:
        await self._keep_before(None)
        await self._flush()
