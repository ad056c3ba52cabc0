"""The `myticket` command: parses arguments, resolves the database, runs a subcommand."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib.metadata
import logging
import os
import re
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import date, datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import (
    ConfigError,
    Settings,
    check_retention_has_archive,
    configure_logging,
    load_settings,
    mask_password,
)

if TYPE_CHECKING:  # imported where used: `myticket --version` needs no driver
    from ..db.repository import Repository

log = logging.getLogger("myticket")


@contextlib.contextmanager
def resolved_database(settings: Settings, *, may_take_over: bool = False) -> Iterator[Settings]:
    """Settings with a database URL: DATABASE_URL, or the embedded server.

    The embedded server is started if it is not running, and then stopped at exit; one
    that was already running (another command's) is used and left running. `serve`
    passes `may_take_over`: it adopts a server whose starter died, and stops it at exit.
    """
    if settings.database_url is not None:
        yield settings
        return
    from ..db.embedded import EmbeddedPostgres

    server = EmbeddedPostgres(settings.pgdata_dir, port=settings.embedded_port)
    url = server.start(take_over_orphan=may_take_over)
    stop_watching = threading.Event()
    watchdog = None
    if may_take_over and server.started_here:
        # The serve that owns the server keeps it up: a crashed server is started again.
        watchdog = threading.Thread(
            target=server.keep_running, args=(stop_watching,), name="embedded-postgres-watchdog", daemon=True
        )
        watchdog.start()
    try:
        yield dataclasses.replace(settings, database_url=url)
    finally:
        stop_watching.set()
        if watchdog is not None:
            watchdog.join()
        if server.started_here:
            log.info("stopping embedded PostgreSQL (started by this process)")
            server.stop()


def embedded_database_url(settings: Settings) -> tuple[str, bool]:
    """The embedded server's URL (where it runs, else where it would start), and whether it runs."""
    from ..db.embedded import EmbeddedPostgres

    server = EmbeddedPostgres(settings.pgdata_dir, port=settings.embedded_port)
    running = server.running_url()
    return (running, True) if running is not None else (server.url, False)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="myticket",
        description="Receive cash-register tickets on a webhook and store them in PostgreSQL.",
        epilog="Configuration comes from the environment: see README.md. "
        "worker, migrate, reprocess, archive, purge and restore apply pending migrations first, like serve.",
    )
    parser.add_argument("--version", action="version", version=f"myticket {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="apply migrations, then serve HTTP (and run the worker)")
    serve.add_argument("--no-worker", action="store_true", help="do not process tickets in this process")
    serve.add_argument(
        "--processes", type=_positive_count, default=None, metavar="N",
        help="server processes sharing the port (default: HTTP_PROCESSES, else 1)",
    )
    commands.add_parser("migrate", help="apply the database migrations and exit")
    commands.add_parser("worker", help="process pending tickets until SIGTERM, without serving HTTP")
    reprocess = commands.add_parser("reprocess", help="put tickets back to pending so the worker parses them again")
    reprocess.add_argument(
        "--status", choices=REQUEUEABLE_STATUSES, default=None,
        help="which tickets (default: rejected; with --id, either)",
    )
    reprocess.add_argument(
        "--since", type=_iso_datetime, default=None, metavar="ISO-DATE",
        help="only tickets received at or after this date or time (UTC unless it says otherwise)",
    )
    reprocess.add_argument("--id", type=_ticket_id, default=None, metavar="UUID", help="only this ticket")
    reprocess.add_argument(
        "--dry-run", action="store_true", help="print the tickets that would be put back to pending; change nothing"
    )
    archive = commands.add_parser(
        "archive", help="write every day received before a date to one compressed file per day, with a manifest"
    )
    archive.add_argument("--before", required=True, metavar="YYYY-MM-DD",
                         help="archive the days before this one (UTC days)")
    # Text, not Path: Path("") is ".", and an empty --to must not archive into the cwd.
    archive.add_argument("--to", required=True, metavar="DIR", dest="directory",
                         help="where the files and manifest.json go (made if missing)")
    purge = commands.add_parser("purge", help="drop whole days received before a date (archived first, unless told)")
    purge.add_argument("--before", required=True, metavar="YYYY-MM-DD", help="purge the days before this one")
    purge.add_argument("--without-archive", action="store_true",
                       help="drop days that have no archive too (pending tickets are never dropped)")
    purge.add_argument("--lock-timeout", default=None, metavar="SECONDS",
                       help="how long to wait for a day's tables before leaving it for later (default: 5)")
    restore = commands.add_parser("restore", help="load tickets back from files or directories written by archive")
    restore.add_argument("paths", nargs="+", metavar="PATH", help="a day file, or a directory of them")
    commands.add_parser(
        "database-url",
        help="print the database URL (DATABASE_URL, or the embedded server's) for psql and scripts",
    )
    send = commands.add_parser(
        "send", help="POST a ticket file to a running service (signed when a webhook secret is set)"
    )
    send.add_argument("file", type=Path, help="the ticket file, sent as its exact bytes")
    send.add_argument(
        "--url", default=None, help="the webhook URL (default: http://127.0.0.1:HTTP_PORT/ticket)"
    )
    return parser


def _version() -> str:
    try:
        return importlib.metadata.version("myticket")
    except importlib.metadata.PackageNotFoundError:  # running from a source tree that is not installed
        from .. import __version__

        return __version__


def _ticket_id(text: str) -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a ticket id (a UUID)") from None


# The commands that run the worker process, and with it retention.
SERVICE_COMMANDS = ("serve", "worker")

# Processed tickets are not requeued: their lines are already counted in the catalogue.
REQUEUEABLE_STATUSES = ("rejected", "duplicate")


def _positive_count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def _iso_datetime(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO date or date-time") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


@contextlib.asynccontextmanager
async def _repository(settings: Settings) -> AsyncIterator[Repository]:
    """A repository for one command, closed when it is done (the database is known by
    now: migrated, and the embedded server started if it is the one)."""
    from ..db.repository import Repository

    assert settings.database_url is not None
    repository = await Repository.connect(settings.database_url)
    try:
        yield repository
    finally:
        await repository.close()


async def _reprocess(settings: Settings, args: argparse.Namespace) -> int:
    """Requeue (or with --dry-run, list) the chosen tickets; return the exit code."""
    if args.status is not None:
        statuses: tuple[str, ...] = (args.status,)
    else:
        statuses = REQUEUEABLE_STATUSES if args.id is not None else ("rejected",)
    chosen = {"statuses": statuses, "since": args.since, "ticket_id": args.id}
    what = " or ".join(statuses)
    async with _repository(settings) as repository:
        if args.dry_run:
            candidates = await repository.requeue_candidates(**chosen)
            count = len(candidates)
        else:
            count = await repository.requeue(**chosen)
        if args.id is not None and count == 0:  # one line saying why, instead of "0 … put back"
            status = await repository.ticket_status(ticket_id=args.id)
            reason = "no such ticket" if status is None else f"it is {status}, not {what}"
            print(f"myticket: ticket {args.id} not requeued: {reason}", file=sys.stderr)
            return 1
        if args.dry_run:
            for ticket in candidates:
                reason = " ".join((ticket.error or "").split())
                print(f"{ticket.id}\t{ticket.status}\t{ticket.received_at.isoformat()}\t{reason}")
            print(f"dry run: {count} {what} tickets would be put back to pending")
        else:
            print(f"{count} {what} tickets put back to pending")
        return 0


def _day(text: str) -> date | None:
    """A YYYY-MM-DD date, or None."""
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def _argument_error(args: argparse.Namespace) -> str | None:
    """Check the arguments of archive, purge and restore (replacing text by values); return the
    one line saying what is wrong, or None."""
    if args.command in ("archive", "purge"):
        before = _day(args.before)
        if before is None:
            return f"{args.command}: --before: {args.before!r} is not a date (YYYY-MM-DD)"
        args.before = before
    if args.command == "archive":
        if not args.directory:
            return "archive: --to: empty; name the directory to archive into"
        args.directory = Path(args.directory)
    if args.command == "restore":
        if "" in args.paths:
            return "restore: PATH: empty; name a day file or a directory of them"
        args.paths = [Path(path) for path in args.paths]
    if args.command == "purge":
        if args.lock_timeout is not None:
            try:
                args.lock_timeout = float(args.lock_timeout)
            except ValueError:
                args.lock_timeout = -1.0
            if not 0 < args.lock_timeout < 86400:
                return "purge: --lock-timeout: must be a number of seconds above 0 (and under a day)"
    return None


async def _archive(settings: Settings, args: argparse.Namespace) -> int:
    from ..archive.commands import archive_before

    async with _repository(settings) as repository:
        archived = await archive_before(repository, before=args.before, directory=args.directory)
    for day in archived:
        if day.refused is not None:
            print(f"{day.day}: refused: {day.refused}")
        else:
            print(f"{day.day}: {day.tickets} tickets archived to {day.file} (sha256 {day.sha256})")
    if not archived:
        print(f"no day before {args.before} to archive")
    return 1 if any(day.refused is not None for day in archived) else 0


async def _purge(settings: Settings, args: argparse.Namespace) -> int:
    """Purge what can be; exit 1 when a day was refused or busy."""
    from ..archive.commands import purge_before

    wait = {} if args.lock_timeout is None else {"lock_timeout_seconds": args.lock_timeout}
    async with _repository(settings) as repository:
        purged = await purge_before(repository, before=args.before, require_archive=not args.without_archive, **wait)
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
        print(f"no day before {args.before} to purge")
    return 1 if kept else 0


async def _restore(settings: Settings, args: argparse.Namespace) -> int:
    from ..archive.commands import restore_paths
    from ..archive.format import max_line_bytes_for

    async with _repository(settings) as repository:
        report = await restore_paths(repository, args.paths,
                                     max_line_bytes=max_line_bytes_for(settings.max_body_bytes),
                                     max_body_bytes=settings.max_body_bytes)
    print(f"restored {report.files} files: {report.tickets_read} tickets read, {report.stored} stored, "
          f"{report.already_present} already present")
    return 0


_ARCHIVE_COMMANDS = {"archive": _archive, "purge": _purge, "restore": _restore}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    argument_error = _argument_error(args)
    if argument_error is not None:
        print(f"myticket: {argument_error}", file=sys.stderr)
        return 1
    try:
        settings = load_settings(os.environ)
        if args.command in SERVICE_COMMANDS:
            check_retention_has_archive(settings)
    except ConfigError as exc:
        print(f"myticket: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    if args.command == "database-url":
        return _print_database_url(settings)
    if args.command == "send":
        from .send import SendError, send_ticket

        try:
            return send_ticket(settings, args.file, url=args.url)
        except SendError as exc:
            print(f"myticket: send: {exc}", file=sys.stderr)
            return 1

    from ..db.embedded import EmbeddedPostgresError
    from ..core.database_errors import DatabaseUnavailable
    from ..db.migrate import MigrationLockTimeout, apply_migrations
    from ..web.server import ListenError, bind_listeners
    from ..db.resources import ResourcesMissing
    from ..worker.supervision import set_process_title

    sockets = []
    if args.command == "serve":
        # Before any side effect: a port in use or a bad HTTP_HOST must change nothing.
        try:
            sockets = bind_listeners(settings.http_host, settings.http_port)
        except ListenError as exc:
            print(f"myticket: {exc}", file=sys.stderr)
            return 1
    try:
        with resolved_database(settings, may_take_over=args.command == "serve") as settings:
            assert settings.database_url is not None
            log.info("database %s", mask_password(settings.database_url))
            if args.command == "serve":
                from ..web.server import serve_processes

                refusal = _prepare_to_serve(settings)
                if refusal is not None:
                    print(f"myticket: {refusal}", file=sys.stderr)
                    return 1
                processes = args.processes or settings.http_processes
                return serve_processes(
                    dataclasses.replace(settings, run_worker=not args.no_worker), processes, sockets
                )
            apply_migrations(settings.database_url)
            if args.command == "worker":
                from ..worker.supervision import run_worker_process

                set_process_title("worker")
                asyncio.run(run_worker_process(settings))
            elif args.command == "reprocess":
                return asyncio.run(_reprocess(settings, args))
            elif args.command in _ARCHIVE_COMMANDS:
                return _run_archive_command(settings, args)
    except EmbeddedPostgresError as exc:
        print(f"myticket: embedded PostgreSQL: {exc}", file=sys.stderr)
        return 1
    except DatabaseUnavailable as exc:
        print(f"myticket: database unavailable: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    except MigrationLockTimeout as exc:
        print(f"myticket: migrations not applied: {exc}", file=sys.stderr)
        return 1
    except ResourcesMissing as exc:
        print(f"myticket: broken installation: {exc}", file=sys.stderr)
        return 1
    finally:
        for sock in sockets:
            sock.close()
    return 0


def _run_archive_command(settings: Settings, args: argparse.Namespace) -> int:
    """archive, purge or restore; what stops it (a refused file, a full disk, data the
    database refuses) is one line naming the command, and exit 1."""
    from ..archive.commands import ArchiveError
    from ..core.database_errors import DatabaseConflict, DataRejected

    try:
        return asyncio.run(_ARCHIVE_COMMANDS[args.command](settings, args))
    except DatabaseConflict as exc:
        print(f"myticket: {args.command}: the database is busy, try again later: {' '.join(str(exc).split())}",
              file=sys.stderr)
    except (ArchiveError, DataRejected) as exc:
        print(f"myticket: {args.command}: {' '.join(str(exc).split())}", file=sys.stderr)
    except OSError as exc:
        print(f"myticket: {args.command}: {exc}", file=sys.stderr)
    return 1


def _prepare_to_serve(settings: Settings) -> str | None:
    """Migrate and check the spool before serving; return why not to serve, or None.

    PostgreSQL down at start is not a reason when a spool is configured: the service
    takes tickets into it, and applies the migrations and replays once PostgreSQL
    answers. Without a spool it is (DatabaseUnavailable, one line). A spool that holds
    tickets for another database is: they would never be replayed here.
    """
    from ..core.database_errors import DatabaseUnavailable
    from ..db.migrate import prepare_database
    from ..intake.spool import SpoolUnavailable, claim_now

    assert settings.database_url is not None
    try:
        identity = prepare_database(settings.database_url)
    except DatabaseUnavailable as exc:
        if settings.spool_max_bytes == 0:
            raise
        log.warning(
            "PostgreSQL does not answer (%s): serving anyway; tickets go to the spool in %s, and the migrations "
            "and the replay wait until PostgreSQL answers", exc.reason, settings.spool_path,
        )
        identity = None
    if settings.spool_max_bytes == 0:
        return None
    try:
        foreign = claim_now(
            settings.spool_path, max_bytes=settings.spool_max_bytes,
            database_url=mask_password(settings.database_url), identity=identity,
        )
    except SpoolUnavailable as exc:  # reported by /ready; PostgreSQL takes the tickets meanwhile
        log.error("%s", exc)
        return None
    if foreign is None:
        return None
    if identity is None:
        log.warning("%s: the spool is not used until PostgreSQL answers and shows it is that database", foreign)
        return None
    return (
        f"{foreign}: refusing to start. Start a service with that database's DATABASE_URL to replay them, "
        "or give this one another MYTICKET_SPOOL_DIR"
    )


def _print_database_url(settings: Settings) -> int:
    """For `psql "$(myticket database-url)"` and scripts: the URL on stdout, notes on
    stderr; exit 1 when the embedded server it names is not running (a script must not
    go on with a dead address)."""
    if settings.database_url is not None:
        print(settings.database_url)
        return 0
    from ..db.embedded import EmbeddedPostgresError

    try:
        url, running = embedded_database_url(settings)
    except EmbeddedPostgresError as exc:
        print(f"myticket: embedded PostgreSQL: {exc}", file=sys.stderr)
        return 1
    print(url)
    if not running:
        print("myticket: the embedded PostgreSQL is not running now; `myticket serve` (make run) starts it",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
