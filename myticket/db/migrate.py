"""yoyo migrations: applied at startup and by `myticket migrate`.

yoyo is synchronous (psycopg2), so this runs before the event loop starts. yoyo's own
lock is a row in `yoyo_lock`, which a process killed mid-migration leaves behind, and
every later start would wait for it and fail. So migrators first take a PostgreSQL
advisory lock on a session of their own: it serialises them (waiting up to
LOCK_TIMEOUT_SECONDS, above the longest migration) and dies with its holder. Whoever
holds it knows that no live migrator holds yoyo's row, and clears a stale one.
"""

from __future__ import annotations

import logging
from pathlib import Path

import psycopg2
import psycopg2.errors
from yoyo import read_migrations
from yoyo.backends import get_backend_class
from yoyo.connections import DatabaseURI
from yoyo.migrations import default_migration_table

from ..core.database_errors import DatabaseUnavailable
from ..core.domain import DatabaseIdentity
from .hosts import Target, connect_chosen
from .resources import ResourcesMissing, load_queries, migrations_directory

log = logging.getLogger(__name__)

LOCK_TIMEOUT_SECONDS = 600
# How long a start-up connection waits for PostgreSQL before calling it unavailable.
CONNECT_TIMEOUT_SECONDS = 10


def migration_ids(migrations_dir: Path | None = None) -> frozenset[str]:
    """The ids of every migration shipped with this version of the code; none found is
    ResourcesMissing: a schema with no migration is a broken install, not an empty one."""
    directory = migrations_dir or migrations_directory()
    ids = frozenset(migration.id for migration in read_migrations(str(directory)))
    if not ids:
        raise ResourcesMissing(f"no migration found in {directory}: the installation is incomplete")
    return ids


def yoyo_backend(target: Target):
    """yoyo's PostgreSQL backend connected to one chosen host.

    yoyo wants a URL and reads it with urlsplit, which fails on a host list and cannot
    carry a key/value DSN; its PostgreSQL backend passes the URL's query arguments to
    psycopg2.connect as keywords, so a URI whose only argument is the single-host `dsn`
    reaches the chosen host with every parameter of the original string."""
    uri = DatabaseURI(scheme="postgresql", username=None, password=None, hostname=None, port=None,
                      database=None, args={"dsn": target.dsn})
    backend = get_backend_class("postgresql")(uri, default_migration_table)
    backend.init_database()
    return backend


class MigrationLockTimeout(Exception):
    """Another live migrator held the lock longer than the timeout."""


def apply_migrations(
    database_url: str, *, migrations_dir: Path | None = None, lock_timeout_seconds: float = LOCK_TIMEOUT_SECONDS
) -> list[str]:
    """Apply what is missing, under the advisory lock; return the ids applied by this call.

    Finding no migration to read raises ResourcesMissing before connecting: a run that
    applied nothing because it found nothing must not look like an up-to-date schema."""
    queries = load_queries()
    migrations_dir = migrations_dir or migrations_directory()
    migration_ids(migrations_dir)
    try:
        # Both sessions on the writable host among those listed (target_session_attrs).
        lock_session, target = connect_chosen(database_url, connect_timeout=CONNECT_TIMEOUT_SECONDS)
        backend = yoyo_backend(target)
    except psycopg2.OperationalError as exc:
        raise DatabaseUnavailable(f"cannot connect to apply migrations: {' '.join(str(exc).split())}") from exc
    try:
        with lock_session.cursor() as cursor:
            try:
                cursor.execute(queries["take_migration_lock"], {"timeout": f"{int(lock_timeout_seconds * 1000)}ms"})
            except psycopg2.errors.LockNotAvailable:
                raise MigrationLockTimeout(
                    f"another migration held the lock for over {lock_timeout_seconds:g} s"
                ) from None
            cursor.execute(queries["migration_lock_rows"])
            for pid, created in cursor.fetchall():
                log.warning("clearing a stale migration lock left by process %s at %s (that migration died)",
                            pid, created)
        backend.break_lock()
        migrations = read_migrations(str(migrations_dir))
        with backend.lock(timeout=lock_timeout_seconds):
            pending = backend.to_apply(migrations)
            backend.apply_migrations(pending)
        applied = [migration.id for migration in pending]
    finally:
        backend.connection.close()
        lock_session.close()  # releases the advisory lock
    log.info("migrations applied: %s", ", ".join(applied) if applied else "none (schema up to date)")
    return applied


def prepare_database(database_url: str, *, migrations_dir: Path | None = None) -> DatabaseIdentity:
    """Apply any missing migration and return which database this is (for the spool).

    What a service needs before it writes to a database, also when it started while
    PostgreSQL was down: one short session when the schema is up to date (each start
    and each reconnection pays only that), the migrator under its lock otherwise.
    """
    queries = load_queries()
    expected = migration_ids(migrations_dir)
    try:
        session, _target = connect_chosen(database_url, connect_timeout=CONNECT_TIMEOUT_SECONDS)
    except psycopg2.OperationalError as exc:
        raise DatabaseUnavailable(f"cannot connect to check migrations: {' '.join(str(exc).split())}") from exc
    try:
        with session.cursor() as cursor:
            cursor.execute(queries["database_identity"])
            system_identifier, name = cursor.fetchone()  # the query's two columns, in this order
            cursor.execute(queries["migrations_table_exists"])
            applied: set[str] = set()
            if cursor.fetchone()[0]:
                cursor.execute(queries["applied_migrations"])
                applied = {row[0] for row in cursor.fetchall()}
    except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
        raise DatabaseUnavailable(f"lost the database while checking migrations: {' '.join(str(exc).split())}") from exc
    finally:
        session.close()
    if not expected <= applied:
        apply_migrations(database_url, migrations_dir=migrations_dir)
    return DatabaseIdentity(system_identifier, name)
