"""/ready's decision, without I/O: it says ready or spooling exactly when a POST is stored."""

from __future__ import annotations

from myticket.core.readiness import readiness

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
