"""The process tier: the service and its commands as real processes. Besides the
session's PostgreSQL, a module may take a private server (`own_server`) that its tests
stop and start without disturbing the other modules."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from myticket.db.embedded import EmbeddedPostgres
from myticket.db.migrate import apply_migrations

from ..database import Db, database_url, db, emptied, pg_server_url  # noqa: F401 (fixtures of this tier)


@pytest.fixture(scope="module")
def own_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    """A migrated server of the test module's own, which its tests may stop and start."""
    module_name = request.module.__name__.rsplit(".", 1)[-1]
    server = EmbeddedPostgres(tmp_path_factory.mktemp(module_name) / "pgdata")
    apply_migrations(server.start())
    yield server
    server.stop()


@pytest.fixture
def own_db(own_server: EmbeddedPostgres) -> Iterator[Db]:
    """Db on the module's own server (started again if a test left it stopped), emptied."""
    if not own_server.is_running():
        own_server.start()
    yield from emptied(own_server.url)
