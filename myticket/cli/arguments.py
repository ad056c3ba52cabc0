"""The `myticket` command line: the parser, each subcommand bound to its function in
`commands`, and the argparse `type=` functions that check every value as it is read.

Two kinds of bad value. Those argparse reports itself (a ticket id that is not a
UUID, say) print the usage and exit 2, as argparse always does. Those of archive,
purge and restore are one line naming the command and the option, exit 1: their type
functions raise ArgumentProblem, which argparse does not catch, and which the
command's one error path prints.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import re
import uuid
from collections.abc import Callable
from datetime import date, datetime, timezone
from pathlib import Path
from typing import TypeVar

from ..config import MAX_HTTP_PROCESSES
from . import commands

Value = TypeVar("Value")

# Seconds --lock-timeout may be: above 0, and under a day.
MAX_LOCK_TIMEOUT_SECONDS = 86400


class ArgumentProblem(Exception):
    """A value the command cannot use, as one line: `<command>: <option>: <why>`."""


def one_line_problem(command: str, option: str, convert: Callable[[str], Value]) -> Callable[[str], Value]:
    """`convert` as a type function whose ValueError is an ArgumentProblem naming
    `command` and `option` (argparse would turn a ValueError into its usage, exit 2)."""

    def checked(text: str) -> Value:
        try:
            return convert(text)
        except ValueError as exc:
            raise ArgumentProblem(f"{command}: {option}: {exc}") from None

    checked.__name__ = convert.__name__
    return checked


def day(text: str) -> date:
    """A YYYY-MM-DD date (--before)."""
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        try:
            return date.fromisoformat(text)
        except ValueError:
            pass
    raise ValueError(f"{text!r} is not a date (YYYY-MM-DD)")


def archive_directory(text: str) -> Path:
    """Where archive writes (--to). Checked as text: Path("") is ".", and an empty --to
    must not archive into the current directory."""
    if not text:
        raise ValueError("empty; name the directory to archive into")
    return Path(text)


def archive_path(text: str) -> Path:
    """A day file or a directory of them, for restore (never "", which Path makes ".")."""
    if not text:
        raise ValueError("empty; name a day file or a directory of them")
    return Path(text)


def lock_timeout(text: str) -> float:
    """Seconds purge waits for a day's tables: above 0, under a day."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < MAX_LOCK_TIMEOUT_SECONDS:  # NaN too
        raise ValueError("must be a number of seconds above 0 (and under a day)")
    return seconds


def ticket_id(text: str) -> str:
    """A ticket id, in the canonical form of a UUID."""
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a ticket id (a UUID)") from None


def iso_datetime(text: str) -> datetime:
    """An ISO date or date-time; UTC unless it says otherwise."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO date or date-time") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def process_count(text: str) -> int:
    """A whole number from 1 to MAX_HTTP_PROCESSES (--processes): each process holds tens
    of MiB, so a typo must not start thousands of them."""
    if not text.isdigit() or not 1 <= int(text) <= MAX_HTTP_PROCESSES:
        raise ValueError(f"must be a whole number from 1 to {MAX_HTTP_PROCESSES}, got {text!r}")
    return int(text)


def version() -> str:
    try:
        return importlib.metadata.version("myticket")
    except importlib.metadata.PackageNotFoundError:  # running from a source tree that is not installed
        from .. import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    """The parser; each subcommand sets `func`, the function in `commands` that runs it,
    called with the settings and the subcommand's options as keywords."""
    parser = argparse.ArgumentParser(
        prog="myticket",
        description="Receive cash-register tickets on a webhook and store them in PostgreSQL.",
        epilog="Configuration comes from the environment: see docs/reference/configuration.md. "
        "worker, migrate, reprocess, archive, purge and restore apply pending migrations first, like serve.",
    )
    parser.add_argument("--version", action="version", version=f"myticket {version()}")
    subcommands = parser.add_subparsers(dest="command", required=True)

    serve = subcommands.add_parser("serve", help="apply migrations, then serve HTTP (and run the worker)")
    serve.add_argument("--no-worker", action="store_true", help="do not process tickets in this process")
    serve.add_argument(
        "--processes", type=one_line_problem("serve", "--processes", process_count), default=None, metavar="N",
        help=f"server processes sharing the port, at most {MAX_HTTP_PROCESSES} (default: HTTP_PROCESSES, else 1)",
    )
    serve.set_defaults(func=commands.serve)

    subcommands.add_parser("migrate", help="apply the database migrations and exit").set_defaults(
        func=commands.migrate
    )
    subcommands.add_parser("worker", help="process pending tickets until SIGTERM, without serving HTTP").set_defaults(
        func=commands.worker
    )

    reprocess = subcommands.add_parser(
        "reprocess", help="put tickets back to pending so the worker parses them again"
    )
    reprocess.add_argument(
        "--status", choices=commands.REQUEUEABLE_STATUSES, default=None,
        help="which tickets (default: rejected; with --id, either)",
    )
    reprocess.add_argument(
        "--since", type=iso_datetime, default=None, metavar="ISO-DATE",
        help="only tickets received at or after this date or time (UTC unless it says otherwise)",
    )
    reprocess.add_argument(
        "--until", type=iso_datetime, default=None, metavar="ISO-DATE",
        help="only tickets received before this date or time (with --since D --until D+1: the day D alone)",
    )
    reprocess.add_argument(
        "--id", type=ticket_id, default=None, metavar="UUID", dest="ticket_id", help="only this ticket"
    )
    reprocess.add_argument(
        "--dry-run", action="store_true", help="print the tickets that would be put back to pending; change nothing"
    )
    reprocess.set_defaults(func=commands.reprocess)

    archive = subcommands.add_parser(
        "archive", help="write every day received before a date to one compressed file per day, with a manifest"
    )
    archive.add_argument("--before", required=True, metavar="YYYY-MM-DD",
                         type=one_line_problem("archive", "--before", day),
                         help="archive the days before this one (UTC days)")
    archive.add_argument("--to", required=True, metavar="DIR", dest="directory",
                         type=one_line_problem("archive", "--to", archive_directory),
                         help="where the files and manifest.json go (made if missing)")
    archive.set_defaults(func=commands.archive)

    purge = subcommands.add_parser(
        "purge", help="drop whole days received before a date (archived first, unless told)"
    )
    purge.add_argument("--before", required=True, metavar="YYYY-MM-DD",
                       type=one_line_problem("purge", "--before", day), help="purge the days before this one")
    purge.add_argument("--without-archive", action="store_true",
                       help="drop days that have no archive too (pending tickets are never dropped)")
    purge.add_argument("--lock-timeout", default=None, metavar="SECONDS",
                       type=one_line_problem("purge", "--lock-timeout", lock_timeout),
                       help="how long to wait for a day's tables before leaving it for later (default: 5)")
    purge.set_defaults(func=commands.purge)

    restore = subcommands.add_parser(
        "restore", help="load tickets back from files or directories written by archive"
    )
    restore.add_argument("paths", nargs="+", metavar="PATH", type=one_line_problem("restore", "PATH", archive_path),
                         help="a day file, or a directory of them")
    restore.set_defaults(func=commands.restore)

    subcommands.add_parser(
        "database-url",
        help="print the database URL (DATABASE_URL, or the embedded server's) for psql and scripts",
    ).set_defaults(func=commands.database_url)

    send = subcommands.add_parser(
        "send", help="POST a ticket file to a running service (signed when a webhook secret is set)"
    )
    send.add_argument("file", type=Path, help="the ticket file, sent as its exact bytes")
    send.add_argument(
        "--url", default=None, help="the webhook URL (default: http://127.0.0.1:HTTP_PORT/ticket)"
    )
    send.set_defaults(func=commands.send)
    return parser
