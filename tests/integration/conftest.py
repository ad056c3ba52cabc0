"""The integration tier: the app in this process against the session's PostgreSQL (a
migrated test database, emptied before each test), through an aiohttp test client."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from myticket.config import Settings
from myticket.web.app import init_app

from ..database import Db, database_url, db, pg_server_url  # noqa: F401 (fixtures of this tier)


@pytest.fixture
def days_to_drop(db: Db) -> Iterator[list]:
    """Days a test makes partitions for: dropped after it. The session's database must not
    keep them, as a later test archiving every day before a date would find them."""
    days: list = []
    yield days
    for day in days:
        db.value("drop_day", {"day": day})


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    # The worker as tasks of the app under test, which the tests can watch and await;
    # the default placement, a worker process, has tests of its own (processes/test_faults.py).
    return Settings(database_url=database_url, data_dir=tmp_path, worker_placement="inline")


@pytest.fixture
async def client(aiohttp_client, settings: Settings, db: Db):
    return await aiohttp_client(await init_app(settings))


@pytest.fixture
async def quiet_app(aiohttp_client, settings: Settings, db: Db):
    """An app without its own worker, so the test drives processing itself."""
    return await aiohttp_client(await init_app(dataclasses.replace(settings, run_worker=False)))
