"""The local spool on its own: a real SQLite file in a temporary directory."""

from __future__ import annotations

import asyncio
import os
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest

from myticket.core.domain import DatabaseIdentity, IncomingTicket
from myticket.intake.spool import Spool, SpoolUnavailable, claim_now
from myticket.intake.spool_file import SPOOL_FILE, quarantine_name
from myticket.intake.spool_ownership import Ownership, SpoolOwner, ownership

URL_A = "postgresql://myticket:***@db-a:5432/myticket"
URL_B = "postgresql://myticket:***@db-b:5432/myticket"
DATABASE_A = DatabaseIdentity("7400000000000000001", "myticket")
DATABASE_B = DatabaseIdentity("7400000000000000002", "myticket")


def tickets(count: int, size: int) -> list[IncomingTicket]:
    now = datetime.now(timezone.utc)
    return [IncomingTicket(str(uuid.uuid4()), now, "text/plain", bytes([n % 256]) * size) for n in range(count)]


async def open_spool(directory: Path, *, max_bytes: int = 10_000_000, url: str = URL_A,
                     identity: DatabaseIdentity | None = DATABASE_A) -> Spool:
    spool = Spool(directory, max_bytes=max_bytes, database_url=url)
    if identity is not None:
        assert await spool.claim(identity) is None
    return spool


def bytes_on_disk(directory: Path) -> int:
    return sum(os.stat(directory / f"{SPOOL_FILE}{suffix}").st_size for suffix in ("", "-wal", "-shm")
               if (directory / f"{SPOOL_FILE}{suffix}").exists())


async def test_spooled_tickets_come_back_oldest_first_and_byte_for_byte(tmp_path):
    spool = await open_spool(tmp_path)
    first, second = tickets(3, 100), tickets(2, 50)
    await spool.write(first)
    await spool.write(second)

    assert await spool.count() == 5
    assert await spool.oldest(10) == first + second
    await spool.delete([ticket.id for ticket in first])
    assert await spool.oldest(10) == second
    await spool.close()

    reopened = await open_spool(tmp_path)
    assert await reopened.oldest(10) == second
    await reopened.close()


async def test_size_is_what_the_spool_occupies_on_disk_wal_and_shared_memory_included(tmp_path):
    spool = await open_spool(tmp_path, max_bytes=100_000_000)
    await spool.write(tickets(50, 10_000))

    assert (tmp_path / f"{SPOOL_FILE}-wal").stat().st_size > 0
    assert await spool.size() == bytes_on_disk(tmp_path)
    await spool.close()


async def test_the_cap_bounds_every_byte_on_disk(tmp_path):
    cap = 400_000
    spool = await open_spool(tmp_path, max_bytes=cap)
    accepted = 0
    with pytest.raises(SpoolUnavailable, match="spool full"):
        for _ in range(100):
            await spool.write(tickets(1, 10_000))
            accepted += 1

    assert accepted > 5
    assert bytes_on_disk(tmp_path) <= cap
    await spool.close()


async def test_a_replay_gives_the_space_back(tmp_path):
    spool = await open_spool(tmp_path, max_bytes=100_000_000)
    batch = tickets(200, 10_000)
    await spool.write(batch)
    full = await spool.size()
    await spool.delete([ticket.id for ticket in batch])

    assert full >= 200 * 10_000
    assert await spool.size() < full // 10
    await spool.close()


async def test_a_batch_over_the_cap_is_refused_and_nothing_of_it_is_kept(tmp_path):
    spool = await open_spool(tmp_path, max_bytes=200_000)
    await spool.write(tickets(2, 1_000))

    with pytest.raises(SpoolUnavailable, match="spool full"):
        await spool.write(tickets(10, 10_000))
    assert await spool.count() == 2
    await spool.close()


# --- whose spool is it -----------------------------------------------------------

@pytest.mark.parametrize(
    ("owner", "holds_tickets", "url", "identity", "verdict"),
    [
        # Nobody recorded yet, or an empty spool: it is ours.
        (None, False, URL_A, None, Ownership.RECORD),
        (None, True, URL_A, DATABASE_A, Ownership.RECORD),
        (SpoolOwner(URL_A, DATABASE_A), False, URL_B, DATABASE_B, Ownership.RECORD),
        # Both identities known: they decide, whatever the URLs.
        (SpoolOwner(URL_A, DATABASE_A), True, URL_A, DATABASE_A, Ownership.KEEP),
        (SpoolOwner(URL_A, DATABASE_A), True, URL_B, DATABASE_A, Ownership.RECORD),
        (SpoolOwner(URL_A, DATABASE_A), True, URL_A, DATABASE_B, Ownership.FOREIGN),
        (SpoolOwner(URL_A, DATABASE_A), True, URL_B, DATABASE_B, Ownership.FOREIGN),
        # One side not confirmed: only the same URL may use it.
        (SpoolOwner(URL_A, DATABASE_A), True, URL_A, None, Ownership.KEEP),
        (SpoolOwner(URL_A, None), True, URL_A, DATABASE_A, Ownership.RECORD),
        (SpoolOwner(URL_A, None), True, URL_A, None, Ownership.KEEP),
        (SpoolOwner(URL_A, DATABASE_A), True, URL_B, None, Ownership.FOREIGN),
        (SpoolOwner(URL_A, None), True, URL_B, DATABASE_B, Ownership.FOREIGN),
    ],
)
def test_ownership(owner, holds_tickets, url, identity, verdict):
    assert ownership(owner, holds_tickets=holds_tickets, database_url=url, identity=identity)[0] is verdict


def test_an_unconfirmed_service_keeps_the_identity_the_spool_recorded():
    verdict, recorded = ownership(SpoolOwner(URL_A, None), holds_tickets=True, database_url=URL_A, identity=DATABASE_A)
    assert (verdict, recorded) == (Ownership.RECORD, SpoolOwner(URL_A, DATABASE_A))
    assert ownership(SpoolOwner(URL_A, DATABASE_A), holds_tickets=False, database_url=URL_A, identity=None) == (
        Ownership.KEEP, None
    )


async def test_a_spool_holding_tickets_for_another_database_is_neither_written_nor_replayed(tmp_path):
    theirs = await open_spool(tmp_path, url=URL_A, identity=DATABASE_A)
    spooled = tickets(3, 100)
    await theirs.write(spooled)
    await theirs.close()

    ours = Spool(tmp_path, max_bytes=10_000_000, database_url=URL_B)
    refusal = await ours.claim(DATABASE_B)
    assert refusal is not None and "holds 3 tickets for database 'myticket' of PostgreSQL system 74" in refusal
    assert await ours.oldest(10) == []
    with pytest.raises(SpoolUnavailable, match="holds 3 tickets"):
        await ours.write(tickets(1, 10))
    assert ours.problem is not None
    await ours.close()

    assert claim_now(tmp_path, max_bytes=10_000_000, database_url=URL_B, identity=DATABASE_B) is not None
    owner_again = await open_spool(tmp_path, url=URL_A, identity=DATABASE_A)
    assert await owner_again.oldest(10) == spooled
    await owner_again.delete([ticket.id for ticket in spooled])
    await owner_again.close()
    # Empty, it belongs to whoever uses it next.
    assert claim_now(tmp_path, max_bytes=10_000_000, database_url=URL_B, identity=DATABASE_B) is None


async def test_tickets_spooled_before_the_database_answered_wait_for_it_to_be_confirmed(tmp_path):
    spool = await open_spool(tmp_path, identity=None)
    spooled = tickets(2, 100)
    await spool.write(spooled)

    assert await spool.oldest(10) == []  # not confirmed yet: nothing is replayed
    assert await spool.claim(DATABASE_A) is None
    assert await spool.oldest(10) == spooled
    await spool.close()


# --- a spool SQLite cannot read ----------------------------------------------------

def test_an_unreadable_spool_is_moved_aside_under_a_timestamped_name(tmp_path):
    moved = quarantine_name(tmp_path / SPOOL_FILE, datetime(2026, 3, 4, 5, 6, 7, 890, tzinfo=timezone.utc))
    assert moved == tmp_path / "spool.sqlite3.corrupt-20260304T050607.000890Z"


async def test_a_corrupt_spool_file_is_moved_aside_and_a_fresh_one_takes_the_tickets(tmp_path, caplog):
    garbage = b"this is not a SQLite database" * 100
    (tmp_path / SPOOL_FILE).write_bytes(garbage)
    spool = await open_spool(tmp_path, identity=None)
    batch = tickets(2, 100)

    await spool.write(batch)

    assert await spool.claim(DATABASE_A) is None
    assert await spool.oldest(10) == batch
    quarantined = await spool.quarantined()
    assert len(quarantined) == 1 and quarantined[0].startswith("spool.sqlite3.corrupt-")
    assert (tmp_path / quarantined[0]).read_bytes() == garbage
    assert any("cannot be read" in record.getMessage() and record.levelname == "ERROR" for record in caplog.records)
    await spool.close()


async def test_a_spool_corrupted_while_open_is_moved_aside_too(tmp_path):
    spool = await open_spool(tmp_path)
    await spool.write(tickets(2, 100))
    await spool.close()
    with open(tmp_path / SPOOL_FILE, "r+b") as file:
        file.write(b"garbage over the header" * 10)
    (tmp_path / f"{SPOOL_FILE}-wal").unlink(missing_ok=True)

    reopened = await open_spool(tmp_path)
    assert await reopened.count() == 0
    await reopened.write(tickets(1, 10))
    assert await reopened.count() == 1
    assert len(await reopened.quarantined()) == 1
    await reopened.close()


async def test_a_replay_batch_is_bounded_in_bytes_and_always_takes_the_first(tmp_path):
    spool = await open_spool(tmp_path, max_bytes=50_000_000)
    large = tickets(5, 1024 * 1024)
    await spool.write(large)

    assert await spool.oldest(500, max_bytes=int(2.5 * 1024 * 1024)) == large[:2]
    assert await spool.oldest(500, max_bytes=1000) == large[:1]  # one, however large
    assert await spool.oldest(3, max_bytes=50_000_000) == large[:3]  # the count still bounds it
    await spool.close()


# --- the spool's state, and a claim from the command line ---------------------------

async def test_a_claim_that_cannot_open_the_spool_raises_and_problem_says_why(tmp_path):
    not_a_directory = tmp_path / "a-file"
    not_a_directory.write_text("")
    spool = Spool(not_a_directory / "spool", max_bytes=10_000_000, database_url=URL_A)

    with pytest.raises(SpoolUnavailable, match="spool not readable"):
        await spool.claim(DATABASE_A)
    assert spool.problem is not None and spool.problem.startswith("spool not readable")
    with pytest.raises(AttributeError):
        spool.problem = None  # only the spool's own methods change it
    await spool.close()


def test_a_blocking_claim_needs_no_event_loop_and_leaves_the_spool_to_its_own_thread(tmp_path):
    spool = Spool(tmp_path, max_bytes=10_000_000, database_url=URL_A)
    assert spool.claim_blocking(DATABASE_A) is None

    async def write_and_count() -> int:  # on the spool's thread: a connection of its own
        await spool.write(tickets(2, 10))
        try:
            return await spool.count()
        finally:
            await spool.close()

    assert asyncio.run(write_and_count()) == 2
    assert spool.problem is None
