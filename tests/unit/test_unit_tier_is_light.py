"""The unit tier runs without the database driver and the web framework: importing
every unit module (and the conftest.py pytest loads with them) leaves psycopg2, aiopg
and aiohttp unloaded. A fresh interpreter checks it, as nothing else is loaded there."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path


from ..environment import child_environment
from ..paths import PROJECT_ROOT

HEAVY = ("psycopg2", "aiopg", "aiohttp")
def unit_modules() -> list[str]:
    here = Path(__file__).resolve().parent
    return sorted(
        f"tests.unit.{path.stem}" for path in here.glob("test_*.py")
    )


def heavy_packages_loaded_by(modules: list[str]) -> list[str]:
    """The heavy packages a fresh interpreter has loaded once it imported `modules`."""
    script = (
        f"import {', '.join(modules)}; import sys; "
        f"print(sorted({{m.split('.')[0] for m in sys.modules if m.split('.')[0] in {HEAVY!r}}}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=PROJECT_ROOT, env=child_environment(),
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    return ast.literal_eval(result.stdout.strip())


def test_importing_the_unit_tier_loads_no_database_driver_and_no_web_framework():
    modules = ["tests.conftest", *unit_modules()]
    assert f"tests.unit.{Path(__file__).stem}" in modules
    assert heavy_packages_loaded_by(modules) == []
