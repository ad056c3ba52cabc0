"""Failover without a person: a pool that follows the writable host.

libpq's asynchronous multi-host connect does not work under aiopg (libpq switches
sockets while it moves to the next host and aiopg keeps watching the first one:
`OSError: [Errno 9] Bad file descriptor`). So the host is chosen here: one single-host
connection attempt per listed host, in order, asking each server what it is
(`session_state`) until one matches target_session_attrs, and an ordinary aiopg pool is
made on that host.

The pool is given up, and the host chosen again on the next acquire, when a
statement or a connection meets an error that says the host may be gone or demoted
(`calls_for_another_host`: no SQLSTATE, class 08, a shutdown, 25006 read-only). Meanwhile
the repository's callers see DatabaseUnavailable as before: ingest spools (or answers
503), the worker pauses, and their next attempt goes to the new primary.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiopg
import psycopg2

from ..core.sessions import SessionState, calls_for_another_host, needs_probe, passes, session_matches
from .hosts import DEFAULT_CONNECT_TIMEOUT_SECONDS, NoMatchingHost, Target, Targets, no_match, parse_targets, writer_targets
from .resources import load_queries

log = logging.getLogger(__name__)

_DRIVER_ERRORS = (psycopg2.Error, OSError, asyncio.TimeoutError)
# After a round found no host, the callers arriving within this time get the same answer
# instead of each trying every host again (a burst of requests during an outage).
FAILED_CHOICE_HOLD_SECONDS = 0.5


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


async def _session_state(connection: aiopg.Connection) -> SessionState:
    async with connection.cursor() as cursor:
        await cursor.execute(load_queries()["session_state"])
        in_recovery, read_only = await cursor.fetchone()
    return SessionState(in_recovery=bool(in_recovery), read_only=bool(read_only))


# Whether a connected host may be used: None, or why not (a reason for the log).
Acceptance = Callable[[Target, aiopg.Connection], Awaitable[str | None]]


async def connect_matching(
    targets: Targets, *, timeout: float = DEFAULT_CONNECT_TIMEOUT_SECONDS, accept: Acceptance | None = None,
    **options: Any,
) -> tuple[Target, aiopg.Connection]:
    """An aiopg connection to the first listed host whose session matches (and that
    `accept` accepts); NoMatchingHost (a psycopg2.OperationalError without SQLSTATE) when
    none does."""
    failures: list[str] = []
    for wanted in passes(targets.session_attrs):
        for target in targets.hosts:
            try:
                connection = await aiopg.connect(target.dsn, timeout=targets.timeout_or(timeout), **options)
            except _DRIVER_ERRORS as exc:
                failures.append(f"{target.label}: {_one_line(exc)}")
                continue
            try:
                if not needs_probe(wanted) or session_matches(wanted, await _session_state(connection)):
                    refusal = await accept(target, connection) if accept is not None else None
                    if refusal is None:
                        return target, connection
                    failures.append(f"{target.label}: {refusal}")
                else:
                    failures.append(f"{target.label}: not {wanted}")
            except _DRIVER_ERRORS as exc:
                failures.append(f"{target.label}: {_one_line(exc)}")
            await connection.close()
    raise no_match(targets, failures)


class HostPool:
    """What the repository uses of an aiopg pool (`acquire()`, `close()`,
    `wait_closed()`), over the host chosen among those listed, chosen again when the
    host in use fails or turns read-only."""

    def __init__(self, targets: Targets, *, minsize: int, maxsize: int, timeout: float, **options: Any) -> None:
        self._targets = targets
        self._pool_options = {"minsize": minsize, "maxsize": maxsize, "timeout": timeout, **options}
        self._connect_options = options
        self._timeout = timeout
        self._pool: aiopg.Pool | None = None
        self._target: Target | None = None
        self._choosing = asyncio.Lock()
        self._failed_choice: tuple[float, str] | None = None
        self._retiring: set[asyncio.Task] = set()
        self._closed = False
        # The database of the first host chosen (system identifier, name): a host list is
        # one database, its primary and standbys. A listed host that turns out to be
        # another cluster is never used, so tickets (and the spool's, replayed through this
        # pool) never go to another database; a person changes DATABASE_URL for that.
        self._identity: tuple[str, str] | None = None
        self._refused_hosts: set[str] = set()

    @classmethod
    async def create(cls, targets: Targets, *, minsize: int, maxsize: int, timeout: float, **options: Any) -> HostPool:
        """The pool; with `minsize` 0 it connects on first use (the service starts
        while PostgreSQL is down), otherwise it chooses its host now or raises."""
        pool = cls(targets, minsize=minsize, maxsize=maxsize, timeout=timeout, **options)
        if minsize > 0:
            await pool._current()
        return pool

    @property
    def host(self) -> str | None:
        """The host in use (host:port), None when none is chosen now."""
        return self._target.label if self._pool is not None and self._target is not None else None

    async def _current(self) -> aiopg.Pool:
        if self._pool is not None:
            return self._pool
        async with self._choosing:
            if self._pool is not None:
                return self._pool
            if self._closed:
                raise psycopg2.InterfaceError("the pool is closed")
            if self._failed_choice is not None and time.monotonic() - self._failed_choice[0] < FAILED_CHOICE_HOLD_SECONDS:
                raise NoMatchingHost(self._failed_choice[1])
            try:
                target = await self._choose()
                pool = await aiopg.create_pool(target.dsn, **self._pool_options)
            except _DRIVER_ERRORS as exc:
                self._failed_choice = (time.monotonic(), _one_line(exc))
                raise
            self._failed_choice = None
            if self._target is not None and self._target != target:
                log.warning("database host is now %s (was %s)", target.label, self._target.label)
            elif len(self._targets.hosts) > 1:
                log.info("database host %s chosen among %d (%s)", target.label, len(self._targets.hosts),
                         self._targets.session_attrs)
            self._pool, self._target = pool, target
            return pool

    async def _choose(self) -> Target:
        if len(self._targets.hosts) == 1 and not needs_probe(self._targets.session_attrs):
            return self._targets.hosts[0]  # nothing to choose: the pool's own connect tells
        target, connection = await connect_matching(
            self._targets, timeout=self._timeout, accept=self._same_database, **self._connect_options
        )
        await connection.close()
        return target

    async def _same_database(self, target: Target, connection: aiopg.Connection) -> str | None:
        async with connection.cursor() as cursor:
            await cursor.execute(load_queries()["database_identity"])
            system_identifier, name = await cursor.fetchone()
        identity = (str(system_identifier), str(name))
        if self._identity is None:
            self._identity = identity
        if identity == self._identity:
            return None
        if target.label not in self._refused_hosts:
            self._refused_hosts.add(target.label)
            log.error("database host %s is another database (%s of system %s, not %s of system %s): never used; "
                      "list only the primary and standbys of one cluster in the URL",
                      target.label, identity[1], identity[0], self._identity[1], self._identity[0])
        return f"another database (system {identity[0]})"

    async def connect(self, **options: Any) -> aiopg.Connection:
        """A connection of its own, outside the pool (a LISTEN, a session advisory lock),
        to a host chosen by the same rule: the session asked for, the same database."""
        if len(self._targets.hosts) == 1 and not needs_probe(self._targets.session_attrs):
            return await aiopg.connect(self._targets.hosts[0].dsn, **options)
        _target, connection = await connect_matching(self._targets, accept=self._same_database, **options)
        return connection

    def _retire(self, pool: aiopg.Pool, exc: BaseException) -> None:
        """Stop handing out `pool`: the next acquire chooses the host again. Its
        connections in use finish (or fail) with their callers and are closed then."""
        if self._pool is not pool:
            return
        self._pool = None
        if len(self._targets.hosts) > 1:
            log.warning("database host %s failed (%s); choosing again on the next attempt",
                        self._target.label if self._target else "?", _one_line(exc))
        pool.close()
        task = asyncio.get_running_loop().create_task(pool.wait_closed(), name="retire-database-pool")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[aiopg.Connection]:
        pool = await self._current()
        try:
            async with pool.acquire() as connection:
                yield connection
        except _DRIVER_ERRORS as exc:
            if calls_for_another_host(getattr(exc, "pgcode", None)):
                self._retire(pool, exc)
            raise

    def close(self) -> None:
        self._closed = True
        if self._pool is not None:
            self._pool.close()

    async def wait_closed(self) -> None:
        if self._pool is not None:
            await self._pool.wait_closed()
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)


async def create_writable_pool(database_url: str, **options: Any) -> HostPool:
    """A HostPool on the writable host (read-write unless the URL says otherwise),
    created with aiopg.create_pool's arguments."""
    return await HostPool.create(writer_targets(database_url), **options)


async def create_host_pool(database_url: str, **options: Any) -> HostPool:
    """A HostPool honouring the URL's target_session_attrs as libpq would ("any" when
    silent): for a reader that may use a standby."""
    return await HostPool.create(parse_targets(database_url), **options)
