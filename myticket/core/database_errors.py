"""What a database failure means for the work that met it: the domain's errors and
their classification by SQLSTATE, without I/O and without the driver.

Driver errors are classified by SQLSTATE (`failure_kind`), not by psycopg2's class:
psycopg2 files "index row too large" (54000) under OperationalError, beside a lost
connection. The repository turns every driver error into one of:

- `DatabaseUnavailable`: the database cannot do any work now (connection lost or
  refused, shutting down, out of disk or memory, read-only): nothing is wrong with the
  data; retry the same work later (the worker pauses, ingest spools or answers 503).
- `DatabaseConflict`, a subclass of `DatabaseUnavailable`: this attempt lost a race or
  ran out of time (serialization failure, deadlock, lock or statement timeout). The same
  work may succeed at once; callers that only know `DatabaseUnavailable` treat it so.
- `StatementTimeout`, a subclass of `DatabaseUnavailable`: a statement ran past a time
  limit, the client's or the server's; `StatementCancelled` (also a `DatabaseConflict`)
  when the server cancelled it. Work too big for the limit can be split (intake halves
  a batch) without knowing the driver that said so.
- `DataRejected`: PostgreSQL refused the data itself (a value out of range, a constraint,
  an index row over the size limit, ...). Retrying the same data fails again: the input
  that carried it is rejected with `reason`, and the other inputs go on.
"""

from __future__ import annotations

import enum


class DatabaseUnavailable(Exception):
    """PostgreSQL could not be reached or refused the work; the caller may retry later.

    Its message is one line with the driver's detail, for logs; `reason` is a short
    class of the failure without host, port or driver wording, for answers to clients.
    """

    @property
    def reason(self) -> str:
        return classify_database_failure(self.__cause__)


class DatabaseConflict(DatabaseUnavailable):
    """This attempt lost a race or ran out of time (deadlock, serialization failure, lock
    or statement timeout): the same work may succeed if tried again now. A subclass of
    DatabaseUnavailable, so that a caller unaware of it retries later, never drops."""


class StatementTimeout(DatabaseUnavailable):
    """A statement ran past a time limit: the client gave up waiting (aiopg's timeout,
    which bounds a connect as well), or the server cancelled it (`StatementCancelled`).
    Not a conflict by itself: a database that answers nothing within the client's limit
    may be gone, so a caller unaware of timeouts pauses as for any unavailability."""


class StatementCancelled(StatementTimeout, DatabaseConflict):
    """The server cancelled the statement (SQLSTATE 57014: its statement_timeout, or
    pg_cancel_backend): the server is up, this attempt ran out of time."""


class DataRejected(Exception):
    """PostgreSQL refused the data of a statement: trying the same data again fails again.

    `sqlstate` is PostgreSQL's code (e.g. 54000); `reason` names the condition and carries
    the server's message, on one line, to be stored as the rejection of the input at fault.
    """

    def __init__(self, message: str, *, sqlstate: str | None, reason: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.reason = reason


class FailureKind(enum.Enum):
    """What a database error says about the work that met it."""

    UNAVAILABLE = "unavailable"  # the database cannot work now: retry later, the data is fine
    CONFLICT = "conflict"  # this attempt lost a race or timed out: retry now, bounded
    DATA = "data"  # the data was refused: the input carrying it is rejected


# SQLSTATE classes (first two characters) of the database's state, not of our data.
_UNAVAILABLE_CLASSES = frozenset({
    "08",  # connection exception
    "28",  # invalid authorization (password changed, role dropped)
    "3D",  # invalid catalog name: the database does not exist (yet, or any more)
    "53",  # insufficient resources: disk full, out of memory, too many connections
    "57",  # operator intervention: admin or crash shutdown, cannot connect now (57014 aside)
    "58",  # system error: I/O error, file missing
    "F0",  # configuration file error
})
_UNAVAILABLE_CODES = frozenset({
    "25006",  # read-only transaction: a standby, or a primary during a failover
    "25P03",  # idle-in-transaction timeout: the server closed the session
})
_CONFLICT_CLASSES = frozenset({
    "40",  # transaction rollback: serialization failure 40001, deadlock 40P01
})
_CONFLICT_CODES = frozenset({
    "55P03",  # lock not available (lock_timeout)
    "57014",  # query canceled (statement_timeout)
})


def failure_kind(sqlstate: str | None) -> FailureKind:
    """Classify a driver error by its SQLSTATE.

    No SQLSTATE means the server never answered (a dropped connection, a refused
    connect, a timeout on our side): unavailable. Codes of the server's state are
    unavailable, races and timeouts are conflicts, and every other code (data exception
    22, integrity 23, program limit 54, and the rest) is the data's: an unknown code must
    never pause processing for everyone, so it is isolated with the input that met it.
    """
    if not sqlstate:
        return FailureKind.UNAVAILABLE
    if sqlstate in _CONFLICT_CODES or sqlstate[:2] in _CONFLICT_CLASSES:
        return FailureKind.CONFLICT
    if sqlstate in _UNAVAILABLE_CODES or sqlstate[:2] in _UNAVAILABLE_CLASSES:
        return FailureKind.UNAVAILABLE
    return FailureKind.DATA


# Substrings of driver messages (lower case), and the short reason each stands for.
_FAILURE_REASONS = (
    ("connection refused", "connection refused"),
    ("could not translate host name", "host name not found"),
    ("timeout", "timeout"),
    ("timed out", "timeout"),
    ("server closed the connection", "connection lost"),
    ("connection already closed", "connection lost"),
    ("terminating connection", "server shutting down"),
    ("database system is shutting down", "server shutting down"),
    ("database system is starting up", "server starting up"),
    ("database system is in recovery mode", "server starting up"),
    ("password authentication failed", "authentication failed"),
    ("does not exist", "database or role does not exist"),
    ("too many clients", "too many connections"),
    ("no space left", "disk full"),
    ("read-only transaction", "read-only"),
    # aiopg's own words for a connection whose socket closed under it (pg_ctl stop).
    ("connection closed", "connection lost"),
    ("fatal error on aiopg connection", "connection lost"),
    ("could not receive data", "connection lost"),
    ("could not send data", "connection lost"),
    ("connection reset", "connection lost"),
    ("broken pipe", "connection lost"),
    ("eof detected", "connection lost"),
    ("no such file or directory", "connection refused"),  # a Unix socket that is gone
    ("no route to host", "host unreachable"),
    ("network is unreachable", "host unreachable"),
)
# A failure none of the fragments above names: still a short documented reason, never
# the driver's class name (answers quote it; the log has the whole message).
UNRECOGNISED_FAILURE = "unrecognised failure"
DATABASE_FAILURE_REASONS = frozenset(reason for _, reason in _FAILURE_REASONS) | {"unknown", UNRECOGNISED_FAILURE}


def classify_database_failure(exc: BaseException | None) -> str:
    """A short reason for a driver error, one of DATABASE_FAILURE_REASONS."""
    if exc is None:
        return "unknown"
    if isinstance(exc, TimeoutError):
        return "timeout"
    message = str(exc).lower()
    for fragment, reason in _FAILURE_REASONS:
        if fragment in message:
            return reason
    return UNRECOGNISED_FAILURE
