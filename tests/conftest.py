"""What every tier needs, and nothing that loads the database driver or the web
framework (the unit tier runs without them): the session's environment made the tests'
own. The tiers with a database have their fixtures in their own conftest.py."""

from __future__ import annotations

import os

import pytest

from .environment import is_service_variable
from .paths import PROJECT_ROOT  # noqa: F401 (for tests/unit/test_readme.py only, which is being replaced)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Before anything reads them: drop the service's variables the developer's shell
    exports (for `make run`), so that no code in this process sees them either."""
    for name in [name for name in os.environ if is_service_variable(name)]:
        del os.environ[name]
