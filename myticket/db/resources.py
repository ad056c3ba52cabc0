"""The files shipped with the code: named SQL queries and migrations.

They live at the top of the source tree (`sql/`, `migrations/`); `myticket/db/sql` and
`myticket/db/migrations` link to them, so they ship inside the package (package-data in
pyproject.toml) and are read through importlib.resources, in a wheel and in an
editable install alike, never from a path beside the package.
"""

from __future__ import annotations

import re
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

SQL_DIRECTORY = "sql"
SPOOL_SQL_DIRECTORY = "sql/spool"
MIGRATIONS_DIRECTORY = "migrations"

_NAME_LINE = re.compile(r"^--\s*name:\s*(?P<name>[a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


class ResourcesMissing(Exception):
    """Files the code needs are not installed with it: a broken install, never a state
    to carry on from (a migration run that finds nothing would apply nothing)."""


def shipped(directory: str) -> Traversable:
    """A directory shipped inside the database layer's package (myticket.db)."""
    return resources.files("myticket.db").joinpath(directory)


def named_queries(source: Traversable | Path) -> dict[str, str]:
    """Every `-- name:` block of the `*.sql` files in `source`; names must be unique."""
    queries: dict[str, str] = {}
    files = sorted((entry for entry in source.iterdir() if entry.name.endswith(".sql")), key=lambda f: f.name)
    for entry in files:
        text = entry.read_text(encoding="utf-8")
        matches = list(_NAME_LINE.finditer(text))
        for index, match in enumerate(matches):
            end = matches[index + 1].start() if index + 1 < len(matches) else len(text)
            name = match.group("name")
            if name in queries:
                raise ValueError(f"{entry.name}: query {name!r} is defined twice")
            queries[name] = text[match.end():end].strip()
    return queries


def load_queries(directory: str = SQL_DIRECTORY) -> dict[str, str]:
    """The named queries shipped in `directory` (the service's, or the spool's)."""
    source = shipped(directory)
    queries = named_queries(source) if source.is_dir() else {}
    if not queries:
        raise ResourcesMissing(f"no named query in myticket/db/{directory}: the installation is incomplete")
    return queries


def migrations_directory() -> Path:
    """The directory of the shipped migrations, as a path (yoyo reads paths).

    A wheel and an editable install both put them on the file system; an install that
    ships them otherwise (zipped) is refused loudly rather than migrating nothing."""
    directory = shipped(MIGRATIONS_DIRECTORY)
    if isinstance(directory, Path) and directory.is_dir() and any(directory.glob("*.sql")):
        return directory
    raise ResourcesMissing(f"no migration in {directory}: the installation is incomplete")
