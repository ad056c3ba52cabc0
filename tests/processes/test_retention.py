"""Retention with two service processes on one database: `myticket serve` (its worker
process runs maintenance) and a standalone `myticket worker`. Each day past the
retention is archived once and purged once, whichever process gets the lock; recent
days and the catalogue stay. And a retention without an archive directory does not
start."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from datetime import date, datetime, time, timedelta, timezone

import aiohttp

from myticket.core.domain import IncomingTicket
from myticket.core.ids import new_delivery_id
from myticket.telemetry.metrics import Metrics
from myticket.db.migrate import apply_migrations
from myticket.db.repository import Repository
from myticket.worker.loop import TicketWorker

from ..database import Db, create_empty_database
from ..helpers import sample, ticket_with
from ..paths import PROJECT_ROOT
from ..service_process import Service
from ..waiting import wait_until

UTC = timezone.utc
RETENTION_DAYS = 3
SKIPPED = "another process holds the maintenance lock; skipping this round"


def partition_names(db: Db) -> set[str]:
    return {name for _parent, name in db.rows("day_partition_names")}


def day_partition_names(day: date) -> set[str]:
    return {f"{parent}_{day:%Y%m%d}" for parent in ("deliveries", "ticket_outcomes", "ticket_lines")}


async def fill_with_processed_tickets(url: str, days: list[date]) -> None:
    """Two processed tickets a day, at noon UTC, as the service would have stored them."""
    tickets = []
    for day in days:
        for n in range(2):
            ticket_id, at = new_delivery_id(datetime.combine(day, time(12, n), tzinfo=UTC))
            body = ticket_with(f"{day}-{n}", f"P{n}", "Item", "1.00", received_at=at).body
            tickets.append(IncomingTicket(ticket_id, at, "text/plain", body))
    repository = await Repository.connect(url)
    try:
        await repository.store_tickets(tickets=tickets)
        await TicketWorker(repository, Metrics()).drain()
    finally:
        await repository.close()


async def metric(service: Service, name: str) -> float | None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{service.base}/metrics") as response:
            return sample(await response.text(), name)


async def test_two_processes_archive_and_purge_each_old_day_once(pg_server_url, tmp_path):
    url = create_empty_database(pg_server_url, "retention_two_processes")
    apply_migrations(url)
    today = datetime.now(UTC).date()
    old_days = [today - timedelta(days=n) for n in (10, 9, 8)]
    recent_days = [today - timedelta(days=RETENTION_DAYS), today - timedelta(days=1), today]
    await fill_with_processed_tickets(url, old_days + recent_days)
    archive_dir = tmp_path / "archive"
    db = Db(url)
    service = Service(
        url, tmp_path / "serve", LOG_LEVEL="INFO", MYTICKET_RETENTION_DAYS=str(RETENTION_DAYS),
        MYTICKET_ARCHIVE_DIR=str(archive_dir), MYTICKET_MAINTENANCE_INTERVAL_SECONDS="0.2",
    )
    worker_log = tmp_path / "worker.log"
    worker = None
    try:
        catalogue = db.rows("product_rows")
        # Held here until both processes have met it, so that they race for the old days.
        db.rows("hold_maintenance_lock")
        await service.start()
        with worker_log.open("w") as output:
            worker = subprocess.Popen(
                service.command("worker"), cwd=PROJECT_ROOT, env=service.env, stdout=output, stderr=subprocess.STDOUT,
            )

        async def both_skipped() -> bool:
            assert worker.poll() is None, worker_log.read_text()
            return SKIPPED in service.log.read_text() and SKIPPED in worker_log.read_text()

        await wait_until(both_skipped, timeout=60, what="both processes to skip a round for the held lock")
        db.rows("release_maintenance_lock")

        async def old_days_gone() -> bool:
            return not partition_names(db) & set().union(*map(day_partition_names, old_days))

        await wait_until(old_days_gone, timeout=60, what="the old days to be purged")

        logs = {"serve": service.log.read_text(), "worker": worker_log.read_text()}
        archived_by_serve = sum(logs["serve"].count(f"archived {day}:") for day in old_days)

        async def serve_metrics_reported() -> bool:
            return await metric(service, "myticket_retention_days_archived_total") == archived_by_serve

        # The worker process of serve reports its tallies to /metrics every second.
        await wait_until(serve_metrics_reported, timeout=15, what="serve's retention metrics")
        purged_by_serve = await metric(service, "myticket_retention_days_purged_total")
        service.signal(signal.SIGTERM)
        worker.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(service.process.wait, 30) == 0
        assert await asyncio.to_thread(worker.wait, 30) == 0

        logs = {"serve": service.log.read_text(), "worker": worker_log.read_text()}
        for day in old_days:
            assert sum(log.count(f"archived {day}:") for log in logs.values()) == 1, day
            assert sum(log.count(f"purged {day}:") for log in logs.values()) == 1, day
        assert purged_by_serve == sum(logs["serve"].count(f"purged {day}:") for day in old_days)
        assert [row[:2] for row in db.rows("archived_day_rows")] == [(day, 2) for day in old_days]
        manifest = json.loads((archive_dir / "manifest.json").read_text())
        assert sorted(manifest["days"]) == [day.isoformat() for day in old_days]
        assert sorted(path.name for path in archive_dir.glob("tickets-*")) == [
            f"tickets-{day.isoformat()}.jsonl.gz" for day in old_days
        ]
        assert set().union(*map(day_partition_names, recent_days)) <= partition_names(db)
        assert db.rows("ticket_count_by_day") == [(day, 2) for day in recent_days]
        assert db.rows("product_rows") == catalogue
    finally:
        if worker is not None and worker.poll() is None:
            worker.kill()
            worker.wait()
        service.stop()
        db.close()


def test_a_worker_with_retention_but_no_archive_dir_does_not_start_and_drops_nothing(pg_server_url, tmp_path):
    url = create_empty_database(pg_server_url, "retention_refused")
    apply_migrations(url)
    db = Db(url)
    try:
        before = partition_names(db)
        service = Service(url, tmp_path, MYTICKET_RETENTION_DAYS="1")
        result = service.run("worker", timeout=60)

        assert result.returncode == 2
        assert result.stderr.strip().splitlines() == [
            "myticket: configuration error: MYTICKET_ARCHIVE_DIR: must be set when MYTICKET_RETENTION_DAYS is (1): "
            "the service purges only days it has archived; dropping data without a copy must be explicit "
            "(`myticket purge --without-archive`)"
        ]
        assert partition_names(db) == before
    finally:
        db.close()
