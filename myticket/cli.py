"""The `myticket` command: parses arguments, resolves the database, runs a subcommand."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone

from .config import ConfigError, Settings, configure_logging, load_settings, mask_password

log = logging.getLogger("myticket")


@contextlib.contextmanager
def resolved_database(settings: Settings) -> Iterator[Settings]:
    """Settings with a database URL: DATABASE_URL, or an embedded server we start and stop."""
    if settings.database_url is not None:
        yield settings
        return
    from .embedded import EmbeddedPostgres

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    server = EmbeddedPostgres(settings.pgdata_dir)
    url = server.start()
    try:
        yield dataclasses.replace(settings, database_url=url)
    finally:
        log.info("stopping embedded PostgreSQL")
        server.stop()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="myticket",
        description="Receive cash-register tickets on a webhook and store them in PostgreSQL.",
        epilog="Configuration comes from the environment: see README.md.",
    )
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
        "--status", choices=REQUEUEABLE_STATUSES, default="rejected", help="which tickets (default: rejected)"
    )
    reprocess.add_argument(
        "--since", type=_iso_datetime, default=None, metavar="ISO-DATE",
        help="only tickets received at or after this date or time (UTC unless it says otherwise)",
    )
    return parser


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


async def _reprocess(settings: Settings, *, status: str, since: datetime | None) -> int:
    from .repository import Repository

    assert settings.database_url is not None
    repository = await Repository.connect(settings.database_url)
    try:
        return await repository.requeue(status=status, since=since)
    finally:
        await repository.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(os.environ)
    except ConfigError as exc:
        print(f"myticket: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)

    from .embedded import EmbeddedPostgresError
    from .migrate import apply_migrations
    from .repository import DatabaseUnavailable

    try:
        with resolved_database(settings) as settings:
            assert settings.database_url is not None
            log.info("database %s", mask_password(settings.database_url))
            apply_migrations(settings.database_url)
            if args.command == "serve":
                from .server import serve_processes

                processes = args.processes or settings.http_processes
                return serve_processes(dataclasses.replace(settings, run_worker=not args.no_worker), processes)
            elif args.command == "worker":
                from .server import run_worker_loops

                asyncio.run(run_worker_loops(settings))
            elif args.command == "reprocess":
                count = asyncio.run(_reprocess(settings, status=args.status, since=args.since))
                print(f"{count} {args.status} tickets put back to pending")
    except EmbeddedPostgresError as exc:
        print(f"myticket: embedded PostgreSQL: {exc}", file=sys.stderr)
        return 1
    except DatabaseUnavailable as exc:
        print(f"myticket: database unavailable: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
