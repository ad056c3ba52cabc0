"""The unit tier runs without the database driver and the web framework: importing
every unit module (and the conftest.py pytest loads with them) leaves psycopg2, aiopg
and aiohttp unloaded. A fresh interpreter checks it, as nothing else is loaded there."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from ..environment import child_environment
from ..paths import PROJECT_ROOT

HEAVY = ("psycopg2", "aiopg", "aiohttp")
# Modules whose subject itself imports a heavy package: their own imports cannot make
# them light. Each is named with its reason, until that code moves (or the test does).
NOT_YET_LIGHT = {
    "test_archive_format.py": "runs myticket.cli.main, which imports myticket.db (psycopg2)",
    "test_cli.py": "imports the error types of myticket.db and myticket.web.server (psycopg2, aiohttp)",
    "test_guarantees.py": "verify_signature is in myticket.web, which imports aiohttp",
    "test_maintenance_days.py": "the day choices are in myticket.worker.maintenance, which imports psycopg2",
    "test_serve_startup.py": "myticket.intake.startup imports myticket.db.migrate (psycopg2)",
}


def unit_modules() -> list[str]:
    here = Path(__file__).resolve().parent
    return sorted(
        f"tests.unit.{path.stem}" for path in here.glob("test_*.py") if path.name not in NOT_YET_LIGHT
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


@pytest.mark.parametrize("file_name", sorted(NOT_YET_LIGHT))
def test_a_module_left_out_is_left_out_for_its_reason_still(file_name: str):
    """Once its subject moves, the exclusion must go, so the check covers it again."""
    assert (Path(__file__).resolve().parent / file_name).is_file(), f"{file_name} is gone: drop its exclusion"
    assert heavy_packages_loaded_by([f"tests.unit.{Path(file_name).stem}"]) != [], (
        f"{file_name} is light now: drop its exclusion"
    )
