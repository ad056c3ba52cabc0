"""A ticket whose processing kills the worker process, for real: `myticket worker` runs
under an address-space limit (RLIMIT_AS) that a 49,000-line ticket exceeds while being
parsed. Started again after each death, as its supervisor would, with nobody touching
the database, the worker processes every other ticket and rejects the killer, after
`MYTICKET_WORKER_MAX_ATTEMPTS` deaths of its own, with a reason that says so."""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path


from myticket.core.domain import IncomingTicket
from myticket.db.repository import Repository

from ..database import Db
from ..paths import PROJECT_ROOT
from ..waiting import wait_until

MIB = 1024 * 1024
MAX_DEATHS = 3
SMALL_TICKETS = 40


def small_ticket(number: int, received_at: datetime) -> IncomingTicket:
    body = f"Order: S{number}\nTotal: 1.50\n\nproduct,product_id,price\nTea,S{number},1.50\n".encode()
    return IncomingTicket(str(uuid.uuid4()), received_at, "text/plain", body)


def killer_ticket(received_at: datetime, lines: int = 49_000) -> IncomingTicket:
    """About 1 MiB of distinct short product lines: some 80 MB once parsed."""
    rows = "".join(f"n{i},K{i:06d},1.00\n" for i in range(lines))
    body = f"Order: KILLER\nTotal: {lines}.00\n\nproduct,product_id,price\n{rows}".encode()
    return IncomingTicket(str(uuid.uuid4()), received_at, "text/plain", body)


async def store(url: str, tickets: list[IncomingTicket]) -> None:
    repository = await Repository.connect(url)
    try:
        await repository.store_tickets(tickets=tickets)
    finally:
        await repository.close()


def worker_env(url: str, data_dir: Path) -> dict[str, str]:
    env = {
        **os.environ, "DATABASE_URL": url, "MYTICKET_DATA_DIR": str(data_dir), "LOG_LEVEL": "WARNING",
        "MYTICKET_WORKERS": "1", "MYTICKET_WORKER_MAX_ATTEMPTS": str(MAX_DEATHS),
        # A budget far above the default, so that the killer is first claimed together
        # with small tickets: their batch dies, and they must not be charged for it.
        "MYTICKET_WORKER_BATCH_MAX_BYTES": str(512 * MIB),
        # One malloc arena: the address space a given amount of work takes is steadier.
        "MALLOC_ARENA_MAX": "1",
    }
    env.pop("MYTICKET_EMBEDDED_PORT", None)
    return env


def start_worker(env: dict[str, str], log: Path, address_space: int | None) -> subprocess.Popen:
    def limit_memory() -> None:
        if address_space is not None:
            resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))

    with log.open("ab") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "myticket", "worker"], cwd=PROJECT_ROOT, env=env,
            stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=limit_memory,
        )


def address_space_peak(pid: int) -> int:
    """VmPeak of a process, in bytes: the most address space it has held."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmPeak:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmPeak")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def pending(db: Db) -> int:
    return dict(db.rows("status_counts")).get("pending", 0)


async def test_a_ticket_that_kills_the_worker_is_rejected_after_its_deaths_and_the_others_flow(
    own_db: Db, tmp_path: Path
):
    db = own_db
    url = db.url

    async def all_processed() -> bool:
        return pending(db) == 0

    env = worker_env(url, tmp_path)
    log = tmp_path / "worker.log"
    now = datetime.now(timezone.utc)

    # How much address space the worker needs for small tickets: measured, not guessed.
    await store(url, [small_ticket(n, now - timedelta(minutes=10)) for n in range(SMALL_TICKETS)])
    calibration = start_worker(env, log, None)
    try:
        await wait_until(all_processed, timeout=60, what="the small tickets to be processed")
        needed = address_space_peak(calibration.pid)
    finally:
        stop(calibration)
    # Room for small tickets to spare, well short of the killer's 65-80 MiB of parsed lines,
    # rows and JSON (tracemalloc's peak, with the parser sharing repeated prices).
    limit = needed + 32 * MIB

    killer = killer_ticket(now - timedelta(minutes=5, seconds=SMALL_TICKETS // 2))
    # The killer in the middle of the queue: its first claim holds small tickets before and after it.
    before = [small_ticket(SMALL_TICKETS + n, now - timedelta(minutes=6, seconds=-n)) for n in range(SMALL_TICKETS)]
    after = [small_ticket(2 * SMALL_TICKETS + n, now - timedelta(minutes=4, seconds=-n)) for n in range(SMALL_TICKETS)]
    await store(url, before + [killer] + after)

    starts = 0
    deadline = time.monotonic() + 240
    process = None
    try:
        while pending(db) and time.monotonic() < deadline:
            if process is None or process.poll() is not None:
                assert starts < MAX_DEATHS + 3, log.read_text()[-3000:]
                process = start_worker(env, log, limit)  # as its supervisor would
                starts += 1
            await asyncio.sleep(0.2)  # waits for: the worker's exit or an empty queue, both another process's state, polled
    finally:
        if process is not None:
            stop(process)

    output = log.read_text()
    assert pending(db) == 0, output[-3000:]
    assert "worker out of memory" in output
    assert db.rows("rejections") == [(killer.id, f"worker died {MAX_DEATHS} times while processing this ticket")]
    assert dict(db.rows("status_counts")) == {"processed": 3 * SMALL_TICKETS, "rejected": 1}
    # One death with the small tickets beside it, then MAX_DEATHS alone: none was charged to them.
    assert starts == MAX_DEATHS + 1 + 1, output[-3000:]  # the deaths, and the start that rejected it
    assert db.value("worker_claims_left") == 0


async def test_a_worker_started_while_postgres_is_down_waits_for_it_then_processes(
    own_server, own_db: Db, tmp_path: Path
):
    """A chaos run found a standalone worker started during an outage exiting 1 ("cannot
    apply migrations"): without a supervisor to start it again, nobody processed."""
    db = own_db
    await store(db.url, [small_ticket(n, datetime.now(timezone.utc)) for n in range(5)])
    log = tmp_path / "worker.log"
    await asyncio.to_thread(own_server.stop, "immediate")
    worker = start_worker({**worker_env(db.url, tmp_path), "LOG_LEVEL": "INFO"}, log, address_space=None)
    try:
        async def waiting() -> bool:
            return "database unavailable, waiting for it" in log.read_text()

        await wait_until(waiting, timeout=60, what="the worker to say it waits for the database")
        assert worker.poll() is None
        await asyncio.to_thread(own_server.start)

        async def all_processed() -> bool:
            return pending(db) == 0

        await wait_until(all_processed, timeout=60, what="the waiting worker to process the stored tickets")
        assert dict(db.rows("status_counts")) == {"processed": 5}
        assert "database available after" in log.read_text()
    finally:
        stop(worker)
