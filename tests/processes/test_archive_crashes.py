"""kill -9 of `myticket archive` and `myticket purge` in the middle of their work: an
archive leaves nothing that passes for a complete file, a purge leaves the whole day.

Each is stopped at a known point, not by luck of timing: another session holds a lock
on ticket_lines, which the archive needs to read a page's lines and the purge needs to
drop the day's lines partition; the test waits until the command is seen waiting for it."""

from __future__ import annotations

import asyncio
import fnmatch
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta, timezone

import psycopg2
import pytest

from myticket.archive.format import day_file_name
from myticket.telemetry.metrics import Metrics
from myticket.db.repository import Repository
from myticket.worker.loop import TicketWorker

from ..database import SUPPORT_QUERIES, Db
from ..helpers import ticket_with
from ..paths import PROJECT_ROOT
from ..waiting import wait_until

UTC = timezone.utc


def midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


def myticket_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "myticket", *args]


def environment(database_url: str) -> dict[str, str]:
    return {**os.environ, "DATABASE_URL": database_url, "LOG_LEVEL": "WARNING"}


def run(database_url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(myticket_command(*args), cwd=PROJECT_ROOT, env=environment(database_url),
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def lock_holder(database_url: str) -> Iterator[psycopg2.extensions.connection]:
    """Another session, whose transaction (opened by its first statement) holds locks
    until the test rolls it back."""
    conn = psycopg2.connect(database_url)
    yield conn
    conn.rollback()
    conn.close()


def hold(conn, query_name: str) -> None:
    with conn.cursor() as cur:
        cur.execute(SUPPORT_QUERIES[query_name])


async def stored_and_processed(database_url: str, day: date, count: int, label: str) -> None:
    repository = await Repository.connect(database_url)
    try:
        tickets = [
            ticket_with(f"{label}{n}", f"{label}{n % 5}", f"Thing {n % 5}", f"{n % 7}.50",
                        received_at=midnight(day) + timedelta(seconds=n))
            for n in range(count)
        ]
        await repository.store_tickets(tickets=tickets)
        await TicketWorker(repository, Metrics()).drain()
    finally:
        await repository.close()


async def waiting_on_ticket_lines(db: Db, process: subprocess.Popen) -> None:
    async def waiting() -> bool:
        assert process.poll() is None, f"the command ended first, with {process.returncode}"
        return db.value("lock_requests_waiting_on_ticket_lines") >= 1

    await wait_until(waiting, timeout=60, what="the command to wait for ticket_lines")


def killed(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL


async def test_archive_killed_mid_file_leaves_nothing_taken_for_complete(database_url, db, lock_holder, tmp_path):
    first_day, second_day = date(2021, 9, 1), date(2021, 9, 2)
    await stored_and_processed(database_url, first_day, 40, "A")
    await stored_and_processed(database_url, second_day, 40, "B")
    archive = tmp_path / "archive"
    assert run(database_url, "archive", "--before", "2021-09-02", "--to", str(archive)).returncode == 0
    manifest_before = (archive / "manifest.json").read_bytes()
    first_file = (archive / day_file_name(first_day)).read_bytes()

    hold(lock_holder, "lock_ticket_lines")
    process = subprocess.Popen(
        myticket_command("archive", "--before", "2021-09-03", "--to", str(archive)),
        cwd=PROJECT_ROOT, env=environment(database_url), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    await waiting_on_ticket_lines(db, process)
    partial = [path for path in archive.iterdir() if ".partial-" in path.name]
    assert partial, "the archive was stopped before it began a file"
    killed(process)
    lock_holder.rollback()

    # Nothing written by the killed archive passes for a day's file: the partial file has
    # a name no reader takes, the previous day file and the manifest are as they were.
    names = sorted(path.name for path in archive.iterdir())
    assert not fnmatch.filter([path.name for path in partial], "tickets-*.jsonl.gz")
    assert day_file_name(second_day) not in names
    assert (archive / "manifest.json").read_bytes() == manifest_before
    assert (archive / day_file_name(first_day)).read_bytes() == first_file
    refused = run(database_url, "restore", str(partial[0]))
    assert refused.returncode == 1 and "not listed in" in refused.stderr and "Traceback" not in refused.stderr

    completed = run(database_url, "archive", "--before", "2021-09-03", "--to", str(archive))

    assert completed.returncode == 0, completed.stderr
    assert not [path for path in archive.iterdir() if ".partial-" in path.name]
    manifest = json.loads((archive / "manifest.json").read_text())
    assert manifest["days"]["2021-09-02"]["tickets"] == 40
    purged = run(database_url, "purge", "--before", "2021-09-03")
    assert purged.returncode == 0, purged.stdout + purged.stderr
    assert db.value("count_tickets") == 0
    restored = run(database_url, "restore", str(archive))
    assert restored.returncode == 0, restored.stderr
    assert "80 stored" in restored.stdout
    assert db.rows("status_counts") == [("processed", 80)]


async def test_purge_killed_mid_transaction_leaves_the_whole_day(database_url, db, lock_holder, tmp_path):
    day = date(2000, 1, 3)
    await stored_and_processed(database_url, day, 20, "C")
    repository = await Repository.connect(database_url)
    try:
        # The purge below must be stopped in this day, not in another one before it.
        assert (await repository.day_partitions())[0] == day
    finally:
        await repository.close()
    assert run(database_url, "archive", "--before", "2000-01-04", "--to", str(tmp_path)).returncode == 0
    bounds = {"lower": midnight(day), "upper": midnight(day + timedelta(days=1))}
    rows_before = db.rows("day_row_counts", bounds)[0]
    assert all(count > 0 for count in rows_before)
    tables = db.rows("day_tables", {"suffix": "20000103"})
    assert len(tables) == 3

    hold(lock_holder, "share_lock_ticket_lines_parent_only")
    process = subprocess.Popen(
        myticket_command("purge", "--before", "2000-01-04", "--lock-timeout", "600"),
        cwd=PROJECT_ROOT, env=environment(database_url), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    # By now its transaction holds the day's four partitions and has detached and dropped
    # the deliveries and outcomes ones; it waits to detach the lines partition.
    await waiting_on_ticket_lines(db, process)
    killed(process)
    lock_holder.rollback()

    async def purge_session_gone() -> bool:
        return db.value("purge_sessions") == 0

    await wait_until(purge_session_gone, timeout=60, what="the killed purge's session to end")
    assert db.rows("day_tables", {"suffix": "20000103"}) == tables
    assert db.rows("day_row_counts", bounds)[0] == rows_before

    # Run to its end, the purge takes the whole day.
    finished = run(database_url, "purge", "--before", "2000-01-04")
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert "2000-01-03: purged" in finished.stdout.splitlines()
    assert db.rows("day_tables", {"suffix": "20000103"}) == []


async def test_a_purge_waiting_for_a_reader_of_an_old_day_does_not_hold_up_intake(database_url, db, lock_holder):
    """A trial found every POST stalled for the purge's whole lock timeout while a report
    read an old day's lines: the purge held the deliveries parent while it waited."""
    day = date(2000, 1, 5)
    await stored_and_processed(database_url, day, 10, "R")
    bounds = {"lower": midnight(day), "upper": midnight(day + timedelta(days=1))}
    with lock_holder.cursor() as cur:  # a long report on that day, still open
        cur.execute(SUPPORT_QUERIES["read_one_day_of_lines"], bounds)
    process = subprocess.Popen(
        myticket_command("purge", "--before", "2000-01-06", "--without-archive", "--lock-timeout", "600"),
        cwd=PROJECT_ROOT, env=environment(database_url), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        await waiting_on_ticket_lines(db, process)
        repository = await Repository.connect(database_url)
        try:
            # Bounded only so that a regression fails instead of hanging: the purge waits 600 s.
            stored = await asyncio.wait_for(
                repository.store_tickets(tickets=[ticket_with("new", "N1", "New", "1.00",
                                                              received_at=datetime.now(UTC))]),
                timeout=60,
            )
        finally:
            await repository.close()
        assert stored == 1
        assert process.poll() is None, "the purge ended before the ticket was stored: nothing was shown"
    finally:
        lock_holder.rollback()
        assert process.wait(timeout=60) == 0
    assert db.rows("day_tables", {"suffix": "20000105"}) == []


async def test_a_lock_timeout_longer_than_the_drivers_ends_as_busy_not_as_an_outage(database_url, db, lock_holder):
    """A trial's `purge --lock-timeout 30` died after 10 s as 'database unavailable':
    the driver gave up on the statement before PostgreSQL's lock timeout came."""
    day = date(2000, 1, 7)
    await stored_and_processed(database_url, day, 5, "T")
    with lock_holder.cursor() as cur:
        cur.execute(SUPPORT_QUERIES["read_one_day_of_lines"],
                    {"lower": midnight(day), "upper": midnight(day + timedelta(days=1))})

    result = run(database_url, "purge", "--before", "2000-01-08", "--without-archive", "--lock-timeout", "12")

    assert result.returncode == 1, result.stdout + result.stderr
    assert "2000-01-07: refused: busy" in result.stdout
    assert "unavailable" not in result.stdout + result.stderr
    assert len(db.rows("day_tables", {"suffix": "20000107"})) == 3
