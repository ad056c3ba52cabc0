"""The local spool on its own: a real SQLite file in a temporary directory."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import pytest

from myticket.repository import IncomingTicket
from myticket.spool import Spool, SpoolUnavailable


def tickets(count: int, size: int) -> list[IncomingTicket]:
    now = datetime.now(timezone.utc)
    return [IncomingTicket(str(uuid.uuid4()), now, "text/plain", bytes([n % 256]) * size) for n in range(count)]


async def test_spooled_tickets_come_back_oldest_first_and_byte_for_byte(tmp_path):
    spool = Spool(tmp_path, max_bytes=10_000_000)
    first, second = tickets(3, 100), tickets(2, 50)
    await spool.write(first)
    await spool.write(second)

    assert await spool.count() == 5
    assert await spool.oldest(10) == first + second
    await spool.delete([ticket.id for ticket in first])
    assert await spool.oldest(10) == second
    await spool.close()

    reopened = Spool(tmp_path, max_bytes=10_000_000)
    assert await reopened.oldest(10) == second
    await reopened.close()


async def test_size_counts_live_tickets_not_pages_freed_by_a_replay(tmp_path):
    spool = Spool(tmp_path, max_bytes=100_000_000)
    batch = tickets(200, 10_000)
    await spool.write(batch)
    full = await spool.size()
    await spool.delete([ticket.id for ticket in batch])

    assert full >= 200 * 10_000
    assert await spool.size() < full // 10
    await spool.close()


async def test_a_batch_over_the_cap_is_refused_and_nothing_of_it_is_kept(tmp_path):
    spool = Spool(tmp_path, max_bytes=50_000)
    await spool.write(tickets(2, 1_000))

    with pytest.raises(SpoolUnavailable, match="spool full"):
        await spool.write(tickets(10, 10_000))
    assert await spool.count() == 2
    await spool.close()
