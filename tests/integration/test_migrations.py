"""Migrations are idempotent and safe when several instances start at once."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from yoyo import get_backend, read_migrations

from myticket.db.migrate import MigrationLockTimeout, apply_migrations, migration_ids
from myticket.db.resources import migrations_directory

from ..database import Db, create_empty_database
from ..paths import PROJECT_ROOT


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
        migrations = read_migrations(str(migrations_directory()))
        with backend.lock():
            backend.rollback_migrations(backend.to_rollback(migrations))
        assert len(backend.to_apply(migrations)) == len(migration_ids())
    finally:
        backend.connection.close()

    assert sorted(apply_migrations(url)) == sorted(migration_ids())


def test_a_lock_left_by_a_killed_migration_is_cleared_not_waited_for(pg_server_url, caplog):
    url = create_empty_database(pg_server_url, "migrate_stale_lock")
    apply_migrations(url)
    db = Db(url)
    try:
        db.rows("leave_stale_migration_lock")
        # yoyo alone would wait for the row until the timeout, then fail.
        assert apply_migrations(url, lock_timeout_seconds=5) == []
    finally:
        db.close()
    assert "clearing a stale migration lock left by process 999999" in caplog.text


def test_a_killed_migrate_process_leaves_nothing_that_blocks_the_next(pg_server_url):
    url = create_empty_database(pg_server_url, "migrate_killed")
    apply_migrations(url)
    with subprocess.Popen(
        [sys.executable, "-c", HOLD_THE_LOCKS_THEN_WAIT, url],
        cwd=PROJECT_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    ) as holder:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(MigrationLockTimeout):
            apply_migrations(url, lock_timeout_seconds=1)  # a live migrator is waited for, not broken
        holder.kill()

    assert apply_migrations(url, lock_timeout_seconds=5) == []


# A stand-in for `myticket migrate` killed mid-migration: it holds the advisory lock and
# has written yoyo's lock row when it is killed.
HOLD_THE_LOCKS_THEN_WAIT = """
import sys, psycopg2
from myticket.db.resources import named_queries
from pathlib import Path
queries = named_queries(Path("tests/sql"))
conn = psycopg2.connect(sys.argv[1])
conn.autocommit = True
with conn.cursor() as cursor:
    cursor.execute(queries["hold_migration_lock"])
    cursor.execute(queries["leave_stale_migration_lock"])
print("holding", flush=True)
sys.stdin.read()  # until killed
"""
