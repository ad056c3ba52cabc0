"""The maintenance loop on a real database: partitions made ahead, retention archiving
then purging the days past it (and keeping a day it must not drop), its metrics, and a
loop that outlives failing rounds."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import date, datetime, time, timedelta, timezone

import pytest

from myticket.core.domain import IncomingTicket
from myticket.core.ids import new_delivery_id
from myticket.core.days import midnight_unix_seconds
from myticket.worker.maintenance import Maintenance
from myticket.telemetry.metrics import Metrics
from myticket.db.migrate import apply_migrations
from myticket.db.repository import Repository
from myticket.worker.loop import TicketWorker

from ..database import Db, create_empty_database
from ..helpers import sample, ticket_with
from ..waiting import wait_until

UTC = timezone.utc
TODAY = datetime.now(UTC).date()
UNREACHABLE = "postgresql://nobody@127.0.0.1:1/none"


def delivery_on(day: date, order: str) -> IncomingTicket:
    ticket_id, at = new_delivery_id(datetime.combine(day, time(12), tzinfo=UTC))
    return IncomingTicket(ticket_id, at, "text/plain", ticket_with(order, "P1", "Milk", "1.00", received_at=at).body)


async def processed_tickets_on(repository: Repository, days: list[date], *, per_day: int = 2) -> None:
    await repository.store_tickets(tickets=[delivery_on(day, f"{day}-{n}") for day in days for n in range(per_day)])
    await TicketWorker(repository, Metrics()).drain()


def partition_days(db: Db) -> list[date]:
    return sorted(
        datetime.strptime(name.removeprefix("deliveries_"), "%Y%m%d").date()
        for parent, name in db.rows("day_partition_names") if parent == "deliveries"
    )


def metric(metrics: Metrics, name: str) -> float | None:
    return sample(metrics.render([])[0].decode(), name)


async def test_a_round_makes_the_partitions_of_today_and_the_next_two_days(pg_server_url):
    url = create_empty_database(pg_server_url, "maintenance_ahead")
    apply_migrations(url)
    later = TODAY + timedelta(days=30)
    repository = await Repository.connect(url)
    db = Db(url)
    try:
        metrics = Metrics()
        maintenance = Maintenance(repository, metrics, interval_seconds=3600, today=lambda: later)

        first = await maintenance.run_round()
        again = await maintenance.run_round()

        assert (first.partitions_made, again.partitions_made) == (3 * 4, 0)  # four tables a day (idempotency keys too)
        assert [day for day in partition_days(db) if day >= later] == [later + timedelta(days=n) for n in range(3)]
        assert (first.cutoff, first.archived, first.purged) == (None, [], [])  # no retention: nothing goes
        assert metric(metrics, "myticket_oldest_day_kept_seconds") == midnight_unix_seconds(partition_days(db)[0])
    finally:
        db.close()
        await repository.close()


async def test_retention_archives_then_purges_the_days_past_it_and_keeps_a_day_with_pending_tickets(
    pg_server_url, tmp_path
):
    url = create_empty_database(pg_server_url, "maintenance_retention")
    apply_migrations(url)
    old_days = [TODAY - timedelta(days=n) for n in (10, 9, 8)]
    pending_day = TODAY - timedelta(days=7)
    kept_days = [TODAY - timedelta(days=3), TODAY]  # the cutoff day itself is kept
    archive_dir = tmp_path / "archive"
    repository = await Repository.connect(url)
    db = Db(url)
    try:
        await processed_tickets_on(repository, old_days + kept_days)
        await repository.store_tickets(tickets=[delivery_on(pending_day, "waiting")])  # not processed yet
        catalogue = db.rows("product_rows")
        metrics = Metrics()
        maintenance = Maintenance(repository, metrics, interval_seconds=3600, retention_days=3,
                                  archive_dir=archive_dir)

        report = await maintenance.run_round()

        assert report.cutoff == TODAY - timedelta(days=3)
        assert report.archived == [*old_days, pending_day]
        assert report.purged == old_days
        assert list(report.refused) == [pending_day] and report.refused[pending_day].startswith("pending")
        assert [day for day in partition_days(db) if day < TODAY] == [pending_day, *kept_days[:1]]
        assert [(day, tickets) for day, tickets in db.rows("ticket_count_by_day")] == [
            (pending_day, 1), (kept_days[0], 2), (TODAY, 2)
        ]
        assert db.rows("product_rows") == catalogue  # the catalogue outlives its tickets
        manifest = json.loads((archive_dir / "manifest.json").read_text())
        assert sorted(manifest["days"]) == [day.isoformat() for day in [*old_days, pending_day]]
        assert [row[:2] for row in db.rows("archived_day_rows")] == [(day, 2) for day in old_days] + [(pending_day, 1)]
        text = metrics.render([])[0].decode()
        assert sample(text, "myticket_retention_days_archived_total") == 4
        assert sample(text, "myticket_retention_days_purged_total") == 3
        assert sample(text, "myticket_oldest_day_kept_seconds") == midnight_unix_seconds(pending_day)

        # Once its ticket is processed, the next round archives that day again, then purges it.
        await TicketWorker(repository, Metrics()).drain()
        report = await maintenance.run_round()
        assert (report.archived, report.purged, report.refused) == ([pending_day], [pending_day], {})
        assert metric(metrics, "myticket_retention_days_purged_total") == 4
        assert metric(metrics, "myticket_oldest_day_kept_seconds") == midnight_unix_seconds(kept_days[0])
    finally:
        db.close()
        await repository.close()


async def test_a_database_outage_fails_rounds_counted_and_logged_once_and_the_loop_goes_on(caplog):
    caplog.set_level(logging.DEBUG, logger="myticket.worker.maintenance")
    repository = await Repository.connect(UNREACHABLE, min_connections=0)
    metrics = Metrics()
    failures: list[float] = []

    async def three_rounds_failed() -> bool:
        failures.append(metric(metrics, "myticket_maintenance_failures_total") or 0)
        return failures[-1] >= 3

    stop = asyncio.Event()
    loop = asyncio.create_task(Maintenance(repository, metrics, interval_seconds=0.01).run(stop))
    try:
        await wait_until(three_rounds_failed, timeout=30, what="three failed maintenance rounds")
        assert not loop.done()
    finally:
        stop.set()
        await loop
        await repository.close()
    warnings = [record for record in caplog.records
                if record.name == "myticket.worker.maintenance" and record.levelno >= logging.WARNING]
    assert len(warnings) == 1, [record.getMessage() for record in warnings]
    assert warnings[0].getMessage().startswith("maintenance round failed, database unavailable: ")


@pytest.mark.parametrize("where", ["a_file", "under_a_file"])
async def test_a_round_failing_on_the_archive_directory_logs_one_line_each_time_counts_and_retries(
    pg_server_url, tmp_path, caplog, where
):
    url = create_empty_database(pg_server_url, f"maintenance_failing_{where}")
    apply_migrations(url)
    old_day = TODAY - timedelta(days=5)
    a_file = tmp_path / "archive"
    a_file.write_text("a file where the archive should go")
    archive_dir = a_file if where == "a_file" else a_file / "archive"
    expected = (f"{a_file}: is a file, not a directory" if where == "a_file"
                else f"NotADirectoryError ENOTDIR: Not a directory: {archive_dir}")
    repository = await Repository.connect(url)
    db = Db(url)
    metrics = Metrics()
    stop = asyncio.Event()
    try:
        await processed_tickets_on(repository, [old_day])
        maintenance = Maintenance(repository, metrics, interval_seconds=0.01, retention_days=1,
                                  archive_dir=archive_dir)
        loop = asyncio.create_task(maintenance.run(stop))

        async def failed_twice() -> bool:
            return (metric(metrics, "myticket_maintenance_failures_total") or 0) >= 2

        await wait_until(failed_twice, timeout=30, what="two failed maintenance rounds")
        assert not loop.done()
        stop.set()
        await loop
        assert old_day in partition_days(db)  # nothing purged that was not archived
        failures = [record for record in caplog.records
                    if record.getMessage().startswith("maintenance round failed: ")]
        assert len(failures) >= 2
        for record in failures:  # one line each round, no traceback
            assert record.getMessage() == f"maintenance round failed: {expected}; the next round in 0.01s tries again"
            assert record.exc_info is None and record.levelno == logging.ERROR
        assert metric(metrics, "myticket_retention_days_purged_total") == 0
    finally:
        stop.set()
        db.close()
        await repository.close()


async def test_stopping_cancels_a_round_under_way_and_the_loop_ends(pg_server_url, caplog):
    caplog.set_level(logging.INFO, logger="myticket.worker.maintenance")
    url = create_empty_database(pg_server_url, "maintenance_stopped")
    apply_migrations(url)
    repository = await Repository.connect(url)
    db = Db(url)
    stop = asyncio.Event()
    try:
        db.rows("hold_partition_lock")  # the round waits in its first step
        later = TODAY + timedelta(days=60)
        loop = asyncio.create_task(Maintenance(repository, Metrics(), interval_seconds=3600, today=lambda: later).run(stop))

        async def round_waiting() -> bool:
            return db.value("sessions_waiting_for_an_advisory_lock") == 1

        await wait_until(round_waiting, timeout=15, what="the round to wait for the partition lock")
        stop.set()
        await asyncio.wait_for(loop, timeout=15)  # not held until the lock is released
        assert "maintenance round interrupted by the shutdown" in caplog.text
        db.rows("release_partition_lock")
    finally:
        stop.set()
        db.close()
        await repository.close()
