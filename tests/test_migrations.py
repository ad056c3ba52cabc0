"""Migrations are idempotent and safe when several instances start at once."""

from __future__ import annotations

import os
import subprocess
import sys

from yoyo import get_backend, read_migrations

from myticket.migrate import MIGRATIONS_DIR, apply_migrations, migration_ids

from .conftest import PROJECT_ROOT, Db, create_empty_database


def test_applying_twice_applies_everything_once(pg_server_url):
    url = create_empty_database(pg_server_url, "migrate_twice")

    first = apply_migrations(url)
    second = apply_migrations(url)

    assert sorted(first) == sorted(migration_ids())
    assert second == []
    db = Db(url)
    try:
        assert [row[0] for row in db.rows("applied_migration_ids")] == sorted(migration_ids())
    finally:
        db.close()


def test_four_migrate_processes_at_once_all_succeed(pg_server_url):
    url = create_empty_database(pg_server_url, "migrate_concurrent")
    env = {**os.environ, "DATABASE_URL": url, "LOG_LEVEL": "WARNING"}

    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "myticket", "migrate"],
            cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        for _ in range(4)
    ]
    outputs = [process.communicate(timeout=120)[0].decode() for process in processes]

    assert [process.returncode for process in processes] == [0, 0, 0, 0], outputs
    db = Db(url)
    try:
        assert [row[0] for row in db.rows("applied_migration_ids")] == sorted(migration_ids())
        assert db.value("count_tickets") == 0
    finally:
        db.close()


def test_every_migration_rolls_back_and_applies_again(pg_server_url):
    url = create_empty_database(pg_server_url, "migrate_rollback")
    apply_migrations(url)

    backend = get_backend(url)
    try:
        migrations = read_migrations(str(MIGRATIONS_DIR))
        with backend.lock():
            backend.rollback_migrations(backend.to_rollback(migrations))
        assert len(backend.to_apply(migrations)) == len(migration_ids())
    finally:
        backend.connection.close()

    assert sorted(apply_migrations(url)) == sorted(migration_ids())
