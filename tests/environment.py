"""The tests choose their own ports, data directories and database, whatever the
developer's shell exports for `make run` (MYTICKET_EMBEDDED_PORT, HTTP_PORT,
MYTICKET_DATA_DIR, DATABASE_URL, ...): the pytest process drops those variables at
start (tests/conftest.py), and every process a test starts gets an environment
without them, to which the test then adds its own values."""

from __future__ import annotations

import os
from collections.abc import Mapping

from myticket.config import ENVIRONMENT_VARIABLES

# Read by the tests themselves (tests/database.py), not by the service: kept.
TEST_VARIABLES = ("MYTICKET_TEST_DATABASE_URL",)


def is_service_variable(name: str) -> bool:
    """A variable the service reads, or may read one day (the MYTICKET_ prefix)."""
    if name in TEST_VARIABLES:
        return False
    return name in ENVIRONMENT_VARIABLES or name.startswith("MYTICKET_")


def without_service_variables(environment: Mapping[str, str]) -> dict[str, str]:
    return {name: value for name, value in environment.items() if not is_service_variable(name)}


def child_environment(**values: str) -> dict[str, str]:
    """The environment for a process a test starts: this process's, without the
    service's variables, then `values` (the test's own settings)."""
    return {**without_service_variables(os.environ), **values}
