"""Driver errors turned into the domain's (`core.database_errors`), in one place, so that
no caller of the database layer ever sees psycopg2, aiopg or a SQLSTATE.

`domain_errors(what)` wraps every piece of work that talks to PostgreSQL; `what` names
the operation in the message of the error raised (a query's or a method's name).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import psycopg2
import psycopg2.errorcodes

from ..core.database_errors import (
    DatabaseConflict,
    DatabaseUnavailable,
    DataRejected,
    FailureKind,
    StatementCancelled,
    StatementTimeout,
    failure_kind,
)

# Everything the driver and the pool raise; `database_error` tells them apart.
DRIVER_ERRORS = (psycopg2.Error, OSError, asyncio.TimeoutError)
# SQLSTATE of a row a CHECK refused (a partitioned table's: no partition for the row).
CHECK_VIOLATION = psycopg2.errorcodes.CHECK_VIOLATION
# SQLSTATE of a statement cancelled by the server: statement_timeout, or pg_cancel_backend.
QUERY_CANCELED = psycopg2.errorcodes.QUERY_CANCELED


def one_line(exc: BaseException) -> str:
    """The driver's message on one line (libpq's carry newlines and tabs)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def unavailable(what: str, exc: BaseException) -> DatabaseUnavailable:
    """The domain error for a driver error, naming the operation that met it."""
    return DatabaseUnavailable(f"{what}: {one_line(exc)}")


def _timed_out(exc: BaseException) -> bool:
    """Whether a timeout, the client's or the server's, is behind a driver error: the
    error itself, or what it was raised while handling (a rollback that fails because
    the timeout closed the connection)."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, TimeoutError) or getattr(cause, "pgcode", None) == QUERY_CANCELED:
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def database_error(what: str, exc: BaseException) -> DatabaseUnavailable | DataRejected:
    """The domain error for a driver error, by the kind of its SQLSTATE."""
    sqlstate = getattr(exc, "pgcode", None)
    kind = failure_kind(sqlstate)
    if kind is FailureKind.UNAVAILABLE:
        if _timed_out(exc):
            return StatementTimeout(f"{what}: {one_line(exc)}")
        return unavailable(what, exc)
    condition = (psycopg2.errorcodes.lookup(sqlstate) or "").lower()
    # The primary message alone: the server's DETAIL and HINT lines are advice to a DBA.
    diagnostics = getattr(exc, "diag", None)
    message = getattr(diagnostics, "message_primary", None) or one_line(exc)
    detail = f"{sqlstate} {condition}".strip() + f": {' '.join(message.split())}"
    if kind is FailureKind.CONFLICT:
        conflict = StatementCancelled if sqlstate == QUERY_CANCELED else DatabaseConflict
        return conflict(f"{what}: {detail}")
    return DataRejected(f"{what}: {detail}", sqlstate=sqlstate, reason=detail)


def cancelled_by_the_server(cancellation: asyncio.CancelledError) -> bool:
    """aiopg turns a statement the server cancelled (SQLSTATE 57014) into a CancelledError
    of the awaiting task; tell it from a real cancellation of that task."""
    task = asyncio.current_task()
    asked_to_cancel = task is not None and task.cancelling() > 0
    return not asked_to_cancel and getattr(cancellation.__context__, "pgcode", None) == QUERY_CANCELED


@contextlib.contextmanager
def domain_errors(what: str) -> Iterator[None]:
    """Raise the domain's error for any driver error met in the block, and
    `StatementCancelled` for the CancelledError aiopg raises when the server cancelled a
    statement; a real cancellation of the task propagates untouched."""
    try:
        yield
    except DRIVER_ERRORS as exc:
        raise database_error(what, exc) from exc
    except asyncio.CancelledError as cancellation:
        if not cancelled_by_the_server(cancellation):
            raise
        raise StatementCancelled(
            f"{what}: statement cancelled by the server ({QUERY_CANCELED})"
        ) from cancellation.__context__
