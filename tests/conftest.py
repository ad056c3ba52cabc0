"""What every tier needs, and nothing that loads the database driver or the web
framework (the unit tier runs without them). The tiers with a database have their
fixtures in their own conftest.py; the constants are in tests/paths.py."""

from __future__ import annotations

from .paths import PROJECT_ROOT  # noqa: F401 (for tests/unit/test_readme.py only, which is being replaced)
