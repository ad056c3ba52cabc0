"""The `myticket` command: parses arguments, resolves the database, runs a subcommand."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import sys
from collections.abc import Iterator, Sequence

from .config import ConfigError, Settings, configure_logging, load_settings, mask_password

log = logging.getLogger("myticket")

# Seconds that run_app waits for in-flight requests on SIGTERM before cancelling them.
SHUTDOWN_TIMEOUT_SECONDS = 8


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
    commands.add_parser("serve", help="apply migrations, then serve HTTP")
    commands.add_parser("migrate", help="apply the database migrations and exit")
    return parser


def _serve(settings: Settings) -> None:
    from aiohttp import web

    from .app import init_app

    web.run_app(
        init_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        access_log=None,  # no per-request log line on the hot path; see /metrics
        shutdown_timeout=SHUTDOWN_TIMEOUT_SECONDS,
        print=lambda message: log.info("%s", message.strip()),
    )


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

    try:
        with resolved_database(settings) as settings:
            assert settings.database_url is not None
            log.info("database %s", mask_password(settings.database_url))
            apply_migrations(settings.database_url)
            if args.command == "serve":
                _serve(settings)
    except EmbeddedPostgresError as exc:
        print(f"myticket: embedded PostgreSQL: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
