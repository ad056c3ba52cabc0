"""yoyo migrations: applied at startup and by `myticket migrate`.

yoyo is synchronous (psycopg2), so this runs before the event loop starts. Its lock is
a row in `yoyo_lock`: several instances starting at once wait for each other, up to
`lock_timeout` seconds, which must stay above the longest migration. A process killed
while holding the lock leaves the row behind; `yoyo break-lock` removes it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import psycopg2
from yoyo import get_backend, read_migrations

from .repository import PROJECT_ROOT, DatabaseUnavailable

log = logging.getLogger(__name__)

MIGRATIONS_DIR = PROJECT_ROOT / "migrations"
LOCK_TIMEOUT_SECONDS = 600


def migration_ids(migrations_dir: Path = MIGRATIONS_DIR) -> frozenset[str]:
    """The ids of every migration shipped with this version of the code."""
    return frozenset(migration.id for migration in read_migrations(str(migrations_dir)))


def apply_migrations(database_url: str, *, migrations_dir: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply what is missing, under yoyo's lock; return the ids applied by this call."""
    try:
        backend = get_backend(database_url)
    except psycopg2.OperationalError as exc:
        raise DatabaseUnavailable(f"cannot connect to apply migrations: {str(exc).strip()}") from exc
    try:
        migrations = read_migrations(str(migrations_dir))
        with backend.lock(timeout=LOCK_TIMEOUT_SECONDS):
            pending = backend.to_apply(migrations)
            backend.apply_migrations(pending)
        applied = [migration.id for migration in pending]
    finally:
        backend.connection.close()
    log.info("migrations applied: %s", ", ".join(applied) if applied else "none (schema up to date)")
    return applied
