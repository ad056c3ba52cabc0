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
from yoyo import get_backend, read_migrations

from .repository import PROJECT_ROOT, DatabaseUnavailable, load_queries

log = logging.getLogger(__name__)

MIGRATIONS_DIR = PROJECT_ROOT / "migrations"
LOCK_TIMEOUT_SECONDS = 600


def migration_ids(migrations_dir: Path = MIGRATIONS_DIR) -> frozenset[str]:
    """The ids of every migration shipped with this version of the code."""
    return frozenset(migration.id for migration in read_migrations(str(migrations_dir)))


class MigrationLockTimeout(Exception):
    """Another live migrator held the lock longer than the timeout."""


def apply_migrations(
    database_url: str, *, migrations_dir: Path = MIGRATIONS_DIR, lock_timeout_seconds: float = LOCK_TIMEOUT_SECONDS
) -> list[str]:
    """Apply what is missing, under the advisory lock; return the ids applied by this call."""
    queries = load_queries()
    try:
        lock_session = psycopg2.connect(database_url)
        backend = get_backend(database_url)
    except psycopg2.OperationalError as exc:
        raise DatabaseUnavailable(f"cannot connect to apply migrations: {' '.join(str(exc).split())}") from exc
    lock_session.autocommit = True
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
