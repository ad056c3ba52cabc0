"""/ready's decision, without I/O: it says ready or spooling exactly when a POST is stored."""

from __future__ import annotations

import pytest

from myticket.core.database_errors import DATABASE_FAILURE_REASONS, UNRECOGNISED_FAILURE, classify_database_failure
from myticket.core.readiness import (
    FAILURE_STANDS_SECONDS,
    FREED_BYTES_CLEAR_A_FAILURE,
    failure_still_stands,
    readiness,
)

from ..paths import PROJECT_ROOT

SPOOL_OK = {"mode": False, "tickets": 0, "bytes": 100, "problem": None, "quarantined": []}


def test_a_confirmed_database_is_ready_even_while_the_spool_cannot_take_tickets():
    broken = {**SPOOL_OK, "mode": True, "problem": "spool not writable: disk full"}
    assert readiness(database_problem=None, missing_migrations=[], spool=broken, spool_max_bytes=1000) == (
        200, {"status": "ready", "spool": broken}
    )


def test_a_database_down_or_not_confirmed_yet_is_spooling_while_the_spool_takes_tickets():
    status, body = readiness(database_problem="unavailable: connection refused", missing_migrations=[],
                             spool=SPOOL_OK, spool_max_bytes=1000)
    assert (status, body["status"], body["spool"]["mode"]) == (200, "spooling", True)


def test_a_database_down_and_a_spool_that_cannot_take_tickets_is_503_with_both_reasons():
    foreign = {**SPOOL_OK, "tickets": 2, "problem": "spool x holds 2 tickets for another database"}
    assert readiness(database_problem="not confirmed", missing_migrations=[], spool=foreign, spool_max_bytes=1000) == (
        503, {"error": "database not confirmed; spool: spool x holds 2 tickets for another database"}
    )
    full = {**SPOOL_OK, "bytes": 1000}
    assert readiness(database_problem="unavailable: timeout", missing_migrations=[], spool=full,
                     spool_max_bytes=1000)[0] == 503
    assert readiness(database_problem="unavailable: timeout", missing_migrations=[], spool=None,
                     spool_max_bytes=0) == (503, {"error": "database unavailable: timeout"})


def test_missing_migrations_are_503_even_with_a_spool():
    assert readiness(database_problem=None, missing_migrations=["0003_x"], spool=SPOOL_OK, spool_max_bytes=1000) == (
        503, {"error": "migrations not applied: 0003_x"}
    )


def test_a_database_that_refused_the_last_write_is_not_ready_though_it_answers_reads():
    assert readiness(database_problem=None, missing_migrations=[], spool=SPOOL_OK, spool_max_bytes=1000,
                     database_refused_writes="disk full") == (
        200, {"status": "spooling", "database": "unavailable: disk full", "spool": {**SPOOL_OK, "mode": True}}
    )
    broken = {**SPOOL_OK, "problem": "spool not writable: disk I/O error"}
    assert readiness(database_problem=None, missing_migrations=[], spool=broken, spool_max_bytes=1000,
                     database_refused_writes="read-only") == (
        503, {"error": "database unavailable: read-only; spool: spool not writable: disk I/O error"}
    )


def test_a_failed_write_stands_while_recent_and_until_its_disk_gains_space():
    assert failure_still_stands(failed_at=100.0, now=101.0)
    assert not failure_still_stands(failed_at=100.0, now=100.0 + FAILURE_STANDS_SECONDS)
    assert failure_still_stands(failed_at=100.0, now=101.0, free_then=0, free_now=4096)
    assert not failure_still_stands(failed_at=100.0, now=101.0, free_then=0, free_now=FREED_BYTES_CLEAR_A_FAILURE)
    assert failure_still_stands(failed_at=100.0, now=101.0, free_then=None, free_now=10**9)


@pytest.mark.parametrize(("exc", "reason"), [
    (Exception("Connection closed"), "connection lost"),  # aiopg, socket closed by pg_ctl stop
    (Exception("Fatal error on aiopg connection: POLL_ERROR from underlying .poll() call"),
     "connection lost"),
    (Exception("could not receive data from server: Connection reset by peer"), "connection lost"),
    (Exception('connection to server on socket "/tmp/.s.PGSQL.5432" failed: No such file or '
                               "directory"), "connection refused"),
    (Exception(""), UNRECOGNISED_FAILURE),
    (RuntimeError("something new"), UNRECOGNISED_FAILURE),
])
def test_every_database_failure_has_a_short_documented_reason_never_a_class_name(exc, reason):
    assert classify_database_failure(exc) == reason
    assert reason in DATABASE_FAILURE_REASONS


def test_every_short_reason_is_documented():
    documented = (PROJECT_ROOT / "docs" / "reference" / "http-api.md").read_text()
    assert [reason for reason in sorted(DATABASE_FAILURE_REASONS) if f"`{reason}`" not in documented] == []
