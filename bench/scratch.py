"""A migrated PostgreSQL of its own for a measurement, gone with its data at the end."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from myticket.db.embedded import EmbeddedPostgres
from myticket.db.migrate import apply_migrations


@contextlib.contextmanager
def scratch_database(prefix: str) -> Iterator[str]:
    """The URL of an embedded PostgreSQL started in a temporary directory, with every
    migration applied; stopped and removed on leaving."""
    with tempfile.TemporaryDirectory(prefix=prefix) as scratch:
        server = EmbeddedPostgres(Path(scratch) / "pgdata")
        url = server.start()
        try:
            apply_migrations(url)
            yield url
        finally:
            server.stop()
