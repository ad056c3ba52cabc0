"""What every tier needs, and nothing that loads the database driver or the web
framework (the unit tier runs without them): the session's environment made the tests'
own. The tiers with a database have their fixtures in their own conftest.py."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest

from .environment import is_service_variable

_PASSED = pytest.StashKey[bool]()


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Before anything reads them: drop the service's variables the developer's shell
    exports (for `make run`), so that no code in this process sees them either; and,
    as root, give the session a temporary directory of its own."""
    for name in [name for name in os.environ if is_service_variable(name)]:
        del os.environ[name]
    if os.geteuid() == 0 and config.option.basetemp is None:
        # As root the embedded PostgreSQL runs as another user, which must be able to
        # cross the directories above its data; every pytest session resets the shared
        # /tmp/pytest-of-root to 0700, cutting off the servers of a session already
        # running (two checkouts tested at once). A directory per session is left alone.
        basetemp = Path(tempfile.mkdtemp(prefix="myticket-tests-"))
        config.option.basetemp = basetemp
        # Registered first, so it runs last: after the session's server has stopped.
        config.add_cleanup(lambda: remove_when_passed(config, basetemp))


@pytest.fixture(scope="session", autouse=True)
def embedded_server_let_through(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The service never widens a directory above its data directory: its start refuses
    one the server's user cannot cross (EmbeddedPostgres._prepare_for_root). As root,
    the tests let that user through the directories pytest makes 0700 (the session's,
    those above it, and each one `tmp_path` and `mktemp` make): o+x, traverse only, as
    an operator would for a data directory of theirs."""
    if os.geteuid() != 0:
        return
    base = tmp_path_factory.getbasetemp()
    for directory in (base, *base.parents):
        let_through(directory)
    make = tmp_path_factory.mktemp

    def mktemp(basename: str, numbered: bool = True) -> Path:
        path = make(basename, numbered)
        let_through(path)
        return path

    tmp_path_factory.mktemp = mktemp  # type: ignore[method-assign]


def let_through(directory: Path) -> None:
    mode = stat.S_IMODE(directory.stat().st_mode)
    if not mode & stat.S_IXOTH:
        directory.chmod(mode | stat.S_IXOTH)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config.stash[_PASSED] = exitstatus == 0


def remove_when_passed(config: pytest.Config, basetemp: Path) -> None:
    """The session's directory goes when every test passed; it stays for a look otherwise."""
    if config.stash.get(_PASSED, False):
        shutil.rmtree(basetemp, ignore_errors=True)
