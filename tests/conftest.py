"""What every tier needs, and nothing that loads the database driver or the web
framework (the unit tier runs without them): the session's environment made the tests'
own. The tiers with a database have their fixtures in their own conftest.py."""

from __future__ import annotations

import os
import shutil
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


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config.stash[_PASSED] = exitstatus == 0


def remove_when_passed(config: pytest.Config, basetemp: Path) -> None:
    """The session's directory goes when every test passed; it stays for a look otherwise."""
    if config.stash.get(_PASSED, False):
        shutil.rmtree(basetemp, ignore_errors=True)
