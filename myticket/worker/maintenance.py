"""Maintenance, a loop of the worker process: partitions made ahead, and retention.

At start and every MYTICKET_MAINTENANCE_INTERVAL_SECONDS, a process that runs the
worker makes the partitions of today and the next two days (idempotent: several
processes may ask at once), so that ingest rarely has to make one on the hot path. With
MYTICKET_RETENTION_DAYS, it then archives the days past the retention into
MYTICKET_ARCHIVE_DIR and purges them (drops their partitions; never DELETE), in one
process only when several run: the one that gets a session-level advisory lock, on a
connection of its own, for the round. The others skip the round, and find the days
gone at their next one, so each day is archived and purged once. Purge drops a day
only when its archive holds all its tickets, none pending (`myticket_purge_day`).
Every round also drops the idempotency keys' day partitions past their lifetime
(MYTICKET_IDEMPOTENCY_KEY_HOURS; never DELETE), in whichever process runs it: the drop
is under the partitions' advisory lock, and a day already gone is not found again.

Every round also deletes the digests of purged days from processed_bodies (one
statement per day; the duplicate look-up ignores them from the purge on).
A round that fails is logged and counted, and the next round tries again: the loop
ends only with its process. A database outage is logged when it begins and when it
ends, not at every round.

The choice of days is pure (`days_to_prepare`, `retention_cutoff`); this module does
the I/O around it.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path

from ..archive.commands import ArchiveError, archive_before, purge_before
from ..core.database_errors import DatabaseUnavailable
from ..core.events import first_of
from ..core.days import days_to_prepare, midnight_unix_seconds, retention_cutoff, utc_today
from ..core.idempotency import oldest_live_day
from ..config import DEFAULT_IDEMPOTENCY_KEY_HOURS
from ..telemetry.metrics import Metrics
from ..telemetry.outage_log import DatabaseOutageLog
from ..db.repository import Repository

log = logging.getLogger(__name__)

@dataclass
class RoundReport:
    """What one maintenance round did."""

    partitions_made: int = 0
    idempotency_days_dropped: int = 0
    # Purged days whose digests this round deleted (the look-up ignored them already).
    digest_days_forgotten: int = 0
    # None: no retention configured, or another process held the lock (`skipped`).
    cutoff: date | None = None
    skipped: bool = False
    archived: list[date] = field(default_factory=list)
    purged: list[date] = field(default_factory=list)
    refused: dict[date, str] = field(default_factory=dict)


def file_failure(exc: OSError | ArchiveError) -> str:
    """A failure of the archive's files as one line: what failed, the errno's name and
    text, and the path (ArchiveError's message names its path already)."""
    if isinstance(exc, ArchiveError):
        return " ".join(str(exc).split())
    code = errno.errorcode.get(exc.errno, str(exc.errno)) if exc.errno is not None else None
    text = exc.strerror or (os.strerror(exc.errno) if exc.errno is not None else str(exc))
    paths = " -> ".join(str(path) for path in (exc.filename, exc.filename2) if path is not None)
    return f"{type(exc).__name__}" + (f" {code}" if code else "") + f": {text}" + (f": {paths}" if paths else "")


class Maintenance:
    """The maintenance loop of one process."""

    def __init__(
        self,
        repository: Repository,
        metrics: Metrics,
        *,
        interval_seconds: float,
        retention_days: int | None = None,
        archive_dir: Path | None = None,
        today: Callable[[], date] = utc_today,
        idempotency_key_hours: int = DEFAULT_IDEMPOTENCY_KEY_HOURS,
        now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    ) -> None:
        if retention_days is not None and archive_dir is None:
            raise ValueError("retention needs an archive directory (config.check_retention_has_archive)")
        self._repository = repository
        self._metrics = metrics
        self.interval_seconds = interval_seconds
        self._retention_days = retention_days
        self._archive_dir = archive_dir
        self._today = today
        self._idempotency_key_hours = idempotency_key_hours
        self._now = now
        self._outage_log = DatabaseOutageLog(
            log,
            began="maintenance round failed, database unavailable: %s; next round in %gs",
            still="maintenance round failed again, database unavailable: %s",
            ended="maintenance round done again after %.1fs of database outage",
        )

    async def run_round(self) -> RoundReport:
        """Make the partitions ahead; with a retention, archive then purge the days past
        it if this process gets the lock; then publish the oldest day kept."""
        today = self._today()
        report = RoundReport(partitions_made=await self._repository.create_day_partitions(days=days_to_prepare(today)))
        report.idempotency_days_dropped = await self._repository.drop_idempotency_keys(
            before=oldest_live_day(self._now(), self._idempotency_key_hours)
        )
        if report.idempotency_days_dropped:
            log.info("dropped the idempotency keys of %d days past their lifetime", report.idempotency_days_dropped)
        if self._retention_days is not None:
            report.cutoff = retention_cutoff(today, self._retention_days)
            if any(day < report.cutoff for day in await self._repository.day_partitions()):
                async with self._repository.maintenance_lock() as held:
                    if held:
                        await self._archive_and_purge(report)
                    else:
                        report.skipped = True
                        log.info("retention: another process holds the maintenance lock; skipping this round")
        report.digest_days_forgotten = len(await self._repository.forget_purged_digests())
        if report.digest_days_forgotten:
            log.info("deleted the digests of %d purged days", report.digest_days_forgotten)
        days = await self._repository.day_partitions()
        if days:
            self._metrics.set_oldest_day_kept(midnight_unix_seconds(days[0]))
        return report

    async def _archive_and_purge(self, report: RoundReport) -> None:
        """Archive every day before the cutoff, then purge those the archive holds (the
        archive module logs each day archived, purged or kept, with why)."""
        assert report.cutoff is not None and self._archive_dir is not None
        archived = await archive_before(self._repository, before=report.cutoff, directory=self._archive_dir)
        report.archived = [day.day for day in archived if day.refused is None]
        self._metrics.retention_done(archived=len(report.archived), purged=0)
        for result in await purge_before(self._repository, before=report.cutoff, require_archive=True):
            if result.purged:
                report.purged.append(result.day)
            elif result.reason != "absent":  # absent: dropped by hand since the list was read
                report.refused[result.day] = result.reason or "refused"
        for day in archived:
            if day.refused is not None and day.day not in report.purged:  # says more than the purge's refusal
                report.refused[day.day] = f"not archived: {day.refused}"
        self._metrics.retention_done(archived=0, purged=len(report.purged))
        log.info(
            "retention: %d days before %s archived to %s, %d purged, %d kept for the next round",
            len(report.archived), report.cutoff, self._archive_dir, len(report.purged), len(report.refused),
        )

    async def run(self, stop: asyncio.Event) -> None:
        """A round now and every `interval_seconds` until `stop`. A round under way when
        `stop` is set is cancelled: archive files are written atomically and a purge
        is one transaction, so the next start does it again from a clean state."""
        while not stop.is_set():
            round_task = asyncio.ensure_future(self.run_round())
            await first_of(stop, others=(round_task,))
            if not round_task.done():
                round_task.cancel()
                try:
                    await round_task
                except asyncio.CancelledError:
                    pass
                except Exception as exc:
                    # It failed as it was being cancelled (seen once under load, a file
                    # error in a thread): the shutdown goes on all the same.
                    log.warning("maintenance round failed as the shutdown stopped it: %s",
                                " ".join(str(exc).split()) or type(exc).__name__)
                log.info("maintenance round interrupted by the shutdown; the next start does it again")
                return
            try:
                round_task.result()
            except DatabaseUnavailable as exc:
                self._metrics.maintenance_failed()
                self._outage_log.failed(exc, retry_seconds=self.interval_seconds)
            except (OSError, ArchiveError) as exc:
                # A full disk or an unwritable directory: the next round tries again, and its
                # one line each round says what to fix; a traceback would say nothing more.
                self._metrics.maintenance_failed()
                log.error("maintenance round failed: %s; the next round in %gs tries again", file_failure(exc),
                          self.interval_seconds)
            except Exception:
                # A bug must not end maintenance for the life of the process.
                self._metrics.maintenance_failed()
                log.exception("maintenance round failed; the next round in %gs tries again", self.interval_seconds)
            else:
                self._outage_log.answered()
            await first_of(stop, timeout=self.interval_seconds)
