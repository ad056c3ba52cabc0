"""The `myticket` command without a database or a subprocess: the argparse type
functions, the parser binding each subcommand to its function, and the one error path
that turns each error a command may end with into one line and its exit code."""

from __future__ import annotations

import argparse
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from myticket.archive.commands import ArchiveError
from myticket.cli import arguments, commands
from myticket.cli.arguments import ArgumentProblem, build_parser
from myticket.cli.commands import CommandError, archive_failures_in_one_line
from myticket.cli.main import main
from myticket.cli.send import SendError
from myticket.config import ENVIRONMENT_VARIABLES, MAX_HTTP_PROCESSES, ConfigError
from myticket.core.database_errors import DatabaseConflict, DatabaseUnavailable, DataRejected
from myticket.db.embedded import EmbeddedPostgresError
from myticket.db.migrate import MigrationLockTimeout
from myticket.db.resources import ResourcesMissing
from myticket.intake.spool_ownership import ForeignSpool
from myticket.web.server import ListenError

TICKET_ID = "5b0c6f0e-1111-4222-8333-444455556666"


# --- the type functions ------------------------------------------------------------

def test_a_day_is_exactly_yyyy_mm_dd():
    assert arguments.day("2026-11-20") == date(2026, 11, 20)
    for text in ("2026-13-01", "2026-02-30", "2026-1-01", "20261120", "yesterday", "", "2026-11-20T00:00"):
        with pytest.raises(ValueError, match=r"is not a date \(YYYY-MM-DD\)"):
            arguments.day(text)


def test_archive_paths_are_paths_and_never_empty():
    assert arguments.archive_directory("out/archive") == Path("out/archive")
    assert arguments.archive_path("day.jsonl.gz") == Path("day.jsonl.gz")
    with pytest.raises(ValueError, match="empty; name the directory to archive into"):
        arguments.archive_directory("")
    with pytest.raises(ValueError, match="empty; name a day file or a directory of them"):
        arguments.archive_path("")


def test_a_lock_timeout_is_seconds_above_0_and_under_a_day():
    assert arguments.lock_timeout("0.5") == 0.5
    assert arguments.lock_timeout("86399") == 86399.0
    for text in ("0", "-1", "86400", "inf", "nan", "soon", ""):
        with pytest.raises(ValueError, match=r"must be a number of seconds above 0 \(and under a day\)"):
            arguments.lock_timeout(text)


def test_a_ticket_id_is_a_uuid_in_canonical_form():
    assert arguments.ticket_id(TICKET_ID.upper()) == TICKET_ID
    with pytest.raises(argparse.ArgumentTypeError, match="'x' is not a ticket id"):
        arguments.ticket_id("x")


def test_since_is_an_iso_date_or_time_in_utc_unless_it_says_otherwise():
    assert arguments.iso_datetime("2026-11-20") == datetime(2026, 11, 20, tzinfo=timezone.utc)
    paris = arguments.iso_datetime("2026-11-20T08:00:00+01:00")
    assert paris.utcoffset() == timedelta(hours=1) and paris == datetime(2026, 11, 20, 7, tzinfo=timezone.utc)
    with pytest.raises(argparse.ArgumentTypeError, match="is not an ISO date or date-time"):
        arguments.iso_datetime("last week")


def test_processes_is_a_whole_number_from_1_to_its_bound():
    assert arguments.process_count("4") == 4
    assert arguments.process_count(str(MAX_HTTP_PROCESSES)) == MAX_HTTP_PROCESSES
    for text in ("0", "-1", "1.5", "two", "", str(MAX_HTTP_PROCESSES + 1), "100000"):
        with pytest.raises(ValueError, match=f"must be a whole number from 1 to {MAX_HTTP_PROCESSES}"):
            arguments.process_count(text)


def test_serve_processes_past_the_bound_is_one_line_and_exit_1(capsys):
    assert main(["serve", "--processes", "100000"]) == 1
    assert capsys.readouterr().err == (
        f"myticket: serve: --processes: must be a whole number from 1 to {MAX_HTTP_PROCESSES}, got '100000'\n"
    )


def test_a_checked_type_names_the_command_and_the_option_and_escapes_argparse():
    checked = arguments.one_line_problem("purge", "--lock-timeout", arguments.lock_timeout)
    assert checked("5") == 5.0
    with pytest.raises(ArgumentProblem) as raised:
        checked("soon")
    assert str(raised.value) == "purge: --lock-timeout: must be a number of seconds above 0 (and under a day)"
    # Not a ValueError: argparse would turn it into its usage and exit 2.
    assert not isinstance(raised.value, (ValueError, TypeError, argparse.ArgumentTypeError))


# --- the parser --------------------------------------------------------------------

@pytest.mark.parametrize("argv, func, options", [
    (["serve", "--processes", "3"], commands.serve, {"no_worker": False, "processes": 3}),
    (["migrate"], commands.migrate, {}),
    (["worker"], commands.worker, {}),
    (["reprocess", "--id", TICKET_ID.upper(), "--dry-run"], commands.reprocess,
     {"status": None, "since": None, "until": None, "ticket_id": TICKET_ID, "dry_run": True}),
    (["archive", "--before", "2026-11-20", "--to", "out"], commands.archive,
     {"before": date(2026, 11, 20), "directory": Path("out")}),
    (["purge", "--before", "2026-11-20", "--lock-timeout", "2.5"], commands.purge,
     {"before": date(2026, 11, 20), "without_archive": False, "lock_timeout": 2.5}),
    (["restore", "a", "b/"], commands.restore, {"paths": [Path("a"), Path("b")]}),
    (["database-url"], commands.database_url, {}),
    (["send", "ticket.txt"], commands.send, {"file": Path("ticket.txt"), "url": None}),
])
def test_each_subcommand_runs_its_function_with_checked_values(argv, func, options):
    parsed = vars(build_parser().parse_args(argv))

    assert parsed.pop("func") is func and parsed.pop("command") == argv[0]
    assert parsed == options


# --- the one error path -----------------------------------------------------------

@pytest.fixture
def clean_environment(monkeypatch, tmp_path):
    """No setting of the machine running the tests reaches the command."""
    for name in ENVIRONMENT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MYTICKET_DATA_DIR", str(tmp_path))


@pytest.mark.parametrize("error, line, exit_code", [
    (ConfigError("HTTP_PORT: must be a whole number, got 'x'"),
     "myticket: configuration error: HTTP_PORT: must be a whole number, got 'x'", 2),
    (CommandError(f"ticket {TICKET_ID} not requeued: no such ticket"),
     f"myticket: ticket {TICKET_ID} not requeued: no such ticket", 1),
    (ListenError("cannot listen on HTTP_HOST=::1 HTTP_PORT=80: Permission denied"),
     "myticket: cannot listen on HTTP_HOST=::1 HTTP_PORT=80: Permission denied", 1),
    (ForeignSpool("spool s holds 1 tickets for b, not for a: refusing to start"),
     "myticket: spool s holds 1 tickets for b, not for a: refusing to start", 1),
    (SendError("cannot read t.txt: No such file or directory"),
     "myticket: send: cannot read t.txt: No such file or directory", 1),
    (EmbeddedPostgresError("127.0.0.1:5 is already in use by another program"),
     "myticket: embedded PostgreSQL: 127.0.0.1:5 is already in use by another program", 1),
    (DatabaseUnavailable("cannot connect: refused\n\tIs the server running?"),
     "myticket: database unavailable: cannot connect: refused Is the server running?", 1),
    (DatabaseConflict("deadlock detected"), "myticket: database unavailable: deadlock detected", 1),
    (MigrationLockTimeout("another migrator held the lock"),
     "myticket: migrations not applied: another migrator held the lock", 1),
    (ResourcesMissing("no migrations in myticket/db/migrations"),
     "myticket: broken installation: no migrations in myticket/db/migrations", 1),
], ids=lambda value: type(value).__name__ if isinstance(value, Exception) else None)
def test_each_error_a_command_ends_with_is_one_line_and_its_exit_code(
    error, line, exit_code, monkeypatch, capsys, clean_environment
):
    def failing(settings):
        raise error

    monkeypatch.setattr(commands, "migrate", failing)

    assert main(["migrate"]) == exit_code
    captured = capsys.readouterr()
    assert captured.err == line + "\n" and captured.out == ""


def test_settings_are_checked_before_the_command_runs(monkeypatch, capsys, clean_environment):
    ran = []
    monkeypatch.setattr(commands, "migrate", lambda settings: ran.append(settings) or 0)
    monkeypatch.setenv("HTTP_PORT", "not-a-port")

    assert main(["migrate"]) == 2
    line = "myticket: configuration error: HTTP_PORT: must be a whole number, got 'not-a-port'"
    assert capsys.readouterr().err == line + "\n"
    assert ran == []


def test_a_bad_archive_argument_stops_before_the_settings_are_read(monkeypatch, capsys, clean_environment):
    monkeypatch.setenv("HTTP_PORT", "not-a-port")  # would be exit 2

    assert main(["archive", "--before", "2026-02-30", "--to", "out"]) == 1
    assert capsys.readouterr().err == "myticket: archive: --before: '2026-02-30' is not a date (YYYY-MM-DD)\n"


def test_an_error_no_command_is_expected_to_end_with_keeps_its_traceback(monkeypatch, clean_environment):
    def broken(settings):
        raise KeyError("a bug")

    monkeypatch.setattr(commands, "migrate", broken)

    with pytest.raises(KeyError, match="a bug"):
        main(["migrate"])


@pytest.mark.parametrize("error, line", [
    (DatabaseConflict("lock timeout on\n day 2026-11-20"),
     "purge: the database is busy, try again later: lock timeout on day 2026-11-20"),
    (ArchiveError("x.jsonl.gz: not listed in  manifest.json"), "purge: x.jsonl.gz: not listed in manifest.json"),
    (DataRejected("value out of range", sqlstate="22003", reason="numeric_value_out_of_range"),
     "purge: value out of range"),
    (OSError(28, "No space left on device"), "purge: [Errno 28] No space left on device"),
])
def test_what_stops_an_archive_command_names_the_command(error, line):
    with pytest.raises(CommandError) as raised, archive_failures_in_one_line("purge"):
        raise error
    assert str(raised.value) == line and raised.value.__cause__ is error


def test_a_database_that_goes_away_during_an_archive_command_is_not_called_busy():
    unavailable = DatabaseUnavailable("connection lost")
    with pytest.raises(DatabaseUnavailable) as raised, archive_failures_in_one_line("archive"):
        raise unavailable
    assert raised.value is unavailable  # main prints it as "database unavailable: ..."


@pytest.mark.parametrize("argv, line", [
    (["archive", "--before", "2026-13-01", "--to", "x"],
     "myticket: archive: --before: '2026-13-01' is not a date (YYYY-MM-DD)"),
    (["archive", "--before", "2026-11-01", "--to", ""],
     "myticket: archive: --to: empty; name the directory to archive into"),
    (["restore", "x", ""], "myticket: restore: PATH: empty; name a day file or a directory of them"),
    (["purge", "--before", "yesterday"], "myticket: purge: --before: 'yesterday' is not a date (YYYY-MM-DD)"),
    (["purge", "--before", "2026-11-20", "--lock-timeout", "soon"],
     "myticket: purge: --lock-timeout: must be a number of seconds above 0 (and under a day)"),
])
def test_a_bad_argument_is_one_line_naming_the_option(argv, line, capsys):
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert captured.err == line + "\n" and captured.out == ""
