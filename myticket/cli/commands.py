"""One function per `myticket` subcommand: called with the settings and the
subcommand's options, it returns the exit code, or raises what `main` turns into one
line on stderr.

The commands that touch the database first resolve it (DATABASE_URL, or the embedded
server) and apply pending migrations; `serve` also checks the spool is this database's.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import date, datetime
from pathlib import Path

from ..archive.commands import ArchiveError, archive_before, purge_before, restore_paths
from ..archive.format import max_line_bytes_for
from ..config import Settings, check_retention_has_archive, mask_password
from ..core.database_errors import DatabaseConflict, DatabaseUnavailable, DataRejected
from ..db.embedded import EmbeddedPostgres
from ..db.migrate import apply_migrations
from ..db.repository import Repository
from ..intake.startup import prepare_to_serve
from ..web.server import bind_listeners, serve_processes
from ..worker.supervision import run_worker_process, set_process_title
from .send import send_ticket

log = logging.getLogger("myticket")

# How often a worker started while PostgreSQL is down tries again to reach it.
WORKER_START_RETRY_SECONDS = 2.0

# Processed tickets are not requeued: their lines are already counted in the catalogue.
REQUEUEABLE_STATUSES = ("rejected", "duplicate")


class CommandError(Exception):
    """What stopped a command, as the one line to print after `myticket: `; exit 1."""


@contextlib.contextmanager
def resolved_database(settings: Settings, *, as_service: bool = False) -> Iterator[Settings]:
    """Settings with a database URL: DATABASE_URL, or the embedded server's for the
    time of the `with` (see EmbeddedPostgres.in_use; `serve` is `as_service`)."""
    if settings.database_url is not None:
        yield settings
        return
    server = EmbeddedPostgres(settings.pgdata_dir, port=settings.embedded_port)
    with server.in_use(as_service=as_service) as url:
        yield dataclasses.replace(settings, database_url=url)


@contextlib.contextmanager
def _migrated(settings: Settings, *, wait_for_database: bool = False) -> Iterator[Settings]:
    """The resolved database, with every migration applied. With wait_for_database (a
    worker, started by a supervisor that may start it before PostgreSQL answers, or
    while a standby is being promoted), an unreachable database is waited for, logged
    when the wait begins and when it ends, instead of ending the process."""
    with resolved_database(settings) as settings:
        assert settings.database_url is not None
        log.info("database %s", mask_password(settings.database_url))
        waited_since = None
        while True:
            try:
                apply_migrations(settings.database_url)
                break
            except DatabaseUnavailable as exc:
                if not wait_for_database:
                    raise
                if waited_since is None:
                    waited_since = time.monotonic()
                    log.warning("database unavailable, waiting for it (every %.0fs): %s",
                                WORKER_START_RETRY_SECONDS, exc)
                time.sleep(WORKER_START_RETRY_SECONDS)
        if waited_since is not None:
            log.info("database available after %.1fs; migrations applied", time.monotonic() - waited_since)
        yield settings


@contextlib.asynccontextmanager
async def _repository(settings: Settings) -> AsyncIterator[Repository]:
    """A repository for one command, closed when it is done."""
    assert settings.database_url is not None
    repository = await Repository.connect(settings.database_url)
    try:
        yield repository
    finally:
        await repository.close()


def serve(settings: Settings, *, no_worker: bool, processes: int | None) -> int:
    check_retention_has_archive(settings)
    # Before any side effect: a port in use or a bad HTTP_HOST must change nothing.
    sockets = bind_listeners(settings.http_host, settings.http_port)
    try:
        with resolved_database(settings, as_service=True) as settings:
            assert settings.database_url is not None
            log.info("database %s", mask_password(settings.database_url))
            prepare_to_serve(settings)
            return serve_processes(
                dataclasses.replace(settings, run_worker=not no_worker), processes or settings.http_processes, sockets
            )
    finally:
        for sock in sockets:
            sock.close()


def migrate(settings: Settings) -> int:
    with _migrated(settings):
        return 0


def worker(settings: Settings) -> int:
    check_retention_has_archive(settings)
    with _migrated(settings, wait_for_database=True) as settings:
        set_process_title("worker")
        asyncio.run(run_worker_process(settings))
    return 0


def reprocess(
    settings: Settings, *, status: str | None, since: datetime | None, until: datetime | None,
    ticket_id: str | None, dry_run: bool,
) -> int:
    """Requeue (or with --dry-run, list) the chosen tickets."""
    if since is not None and until is not None and since >= until:
        raise CommandError(f"reprocess: --since ({since.isoformat()}) must be before --until ({until.isoformat()})")
    with _migrated(settings) as settings:
        return asyncio.run(
            _reprocess(settings, status=status, since=since, until=until, ticket_id=ticket_id, dry_run=dry_run)
        )


async def _reprocess(
    settings: Settings, *, status: str | None, since: datetime | None, until: datetime | None,
    ticket_id: str | None, dry_run: bool,
) -> int:
    if status is not None:
        statuses: tuple[str, ...] = (status,)
    else:
        statuses = REQUEUEABLE_STATUSES if ticket_id is not None else ("rejected",)
    chosen = {"statuses": statuses, "since": since, "until": until, "ticket_id": ticket_id}
    what = " or ".join(statuses)
    async with _repository(settings) as repository:
        if dry_run:
            candidates = await repository.requeue_candidates(**chosen)
            count = len(candidates)
        else:
            count = await repository.requeue(**chosen)
        if ticket_id is not None and count == 0:  # one line saying why, instead of "0 … put back"
            found = await repository.ticket_status(ticket_id=ticket_id)
            reason = "no such ticket" if found is None else f"it is {found}, not {what}"
            raise CommandError(f"ticket {ticket_id} not requeued: {reason}")
        if dry_run:
            for ticket in candidates:
                reason = " ".join((ticket.error or "").split())
                print(f"{ticket.id}\t{ticket.status}\t{ticket.received_at.isoformat()}\t{reason}")
            print(f"dry run: {count} {what} tickets would be put back to pending")
        else:
            print(f"{count} {what} tickets put back to pending")
        return 0


@contextlib.contextmanager
def archive_failures_in_one_line(command: str) -> Iterator[None]:
    """What stops archive, purge or restore once under way (a refused file, a full disk,
    data the database refuses) as a CommandError naming the command."""
    try:
        yield
    except DatabaseConflict as exc:
        raise CommandError(f"{command}: the database is busy, try again later: {' '.join(str(exc).split())}") from exc
    except (ArchiveError, DataRejected) as exc:
        raise CommandError(f"{command}: {' '.join(str(exc).split())}") from exc
    except OSError as exc:
        raise CommandError(f"{command}: {exc}") from exc


def archive(settings: Settings, *, before: date, directory: Path) -> int:
    """Archive every day before `before`; exit 1 when a day was refused."""
    with _migrated(settings) as settings, archive_failures_in_one_line("archive"):
        return asyncio.run(_archive(settings, before=before, directory=directory))


async def _archive(settings: Settings, *, before: date, directory: Path) -> int:
    async with _repository(settings) as repository:
        archived = await archive_before(repository, before=before, directory=directory)
    for day in archived:
        if day.refused is not None:
            print(f"{day.day}: refused: {day.refused}")
        else:
            print(f"{day.day}: {day.tickets} tickets archived to {day.file} (sha256 {day.sha256})")
    if not archived:
        print(f"no day before {before} to archive")
    return 1 if any(day.refused is not None for day in archived) else 0


def purge(settings: Settings, *, before: date, without_archive: bool, lock_timeout: float | None) -> int:
    """Purge what can be; exit 1 when a day was refused or busy."""
    with _migrated(settings) as settings, archive_failures_in_one_line("purge"):
        return asyncio.run(
            _purge(settings, before=before, without_archive=without_archive, lock_timeout=lock_timeout)
        )


async def _purge(settings: Settings, *, before: date, without_archive: bool, lock_timeout: float | None) -> int:
    wait = {} if lock_timeout is None else {"lock_timeout_seconds": lock_timeout}
    async with _repository(settings) as repository:
        purged = await purge_before(repository, before=before, require_archive=not without_archive, **wait)
    kept = 0
    for day in purged:
        if day.purged:
            print(f"{day.day}: purged")
        elif day.reason == "absent":
            print(f"{day.day}: already gone")
        else:
            kept += 1
            print(f"{day.day}: refused: {day.reason}")
    if not purged:
        print(f"no day before {before} to purge")
    return 1 if kept else 0


def restore(settings: Settings, *, paths: Sequence[Path]) -> int:
    with _migrated(settings) as settings, archive_failures_in_one_line("restore"):
        return asyncio.run(_restore(settings, paths=paths))


async def _restore(settings: Settings, *, paths: Sequence[Path]) -> int:
    async with _repository(settings) as repository:
        report = await restore_paths(repository, paths,
                                     max_line_bytes=max_line_bytes_for(settings.max_body_bytes),
                                     max_body_bytes=settings.max_body_bytes)
    print(f"restored {report.files} files: {report.tickets_read} tickets read, {report.stored} stored, "
          f"{report.already_present} already present")
    return 0


def database_url(settings: Settings) -> int:
    """For `psql "$(myticket database-url)"` and scripts: the URL on stdout, notes on
    stderr; exit 1 when the embedded server it names is not running (a script must not
    go on with a dead address)."""
    if settings.database_url is not None:
        print(settings.database_url)
        return 0
    server = EmbeddedPostgres(settings.pgdata_dir, port=settings.embedded_port)
    running = server.running_url()
    print(running if running is not None else server.url)  # where it runs, else where it would start
    if running is None:
        print("myticket: the embedded PostgreSQL is not running now; `myticket serve` (make run) starts it",
              file=sys.stderr)
        return 1
    return 0


def send(settings: Settings, *, file: Path, url: str | None) -> int:
    return send_ticket(settings, file, url=url)
