"""myticket installed as a wheel (`pip install .`, not editable), in a fresh venv, run
from a directory outside the checkout: the SQL and the migrations ship inside the
package (without setuptools warning that their directories "would be ignored"), and an
installation missing them fails loudly instead of migrating nothing."""

from __future__ import annotations

import asyncio
import shutil
import site
import subprocess
import sys
from pathlib import Path

import aiohttp

from ..database import Db, create_empty_database
from ..environment import child_environment
from ..paths import PROJECT_ROOT, REFERENCE_TICKET
from ..service_process import Service

# Nothing may lead the installed python back to the checkout.
CLEAN_ENVIRONMENT = {name: value for name, value in child_environment().items() if name != "PYTHONPATH"}


def assert_no_ignored_package_warning(output: str) -> None:
    """setuptools warns, in some 30 lines each, of a directory under the package that
    is "absent from the `packages` configuration" and would be ignored."""
    assert "would be ignored" not in output, output
    assert "absent from the `packages` configuration" not in output, output


def build_wheel(into: Path) -> Path:
    """The wheel of the checkout, built as `pip install .` would build it (verbose, so
    that every line the build backend prints is seen)."""
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--verbose", "-w", str(into), str(PROJECT_ROOT)],
        check=True, capture_output=True, text=True, timeout=300, env=CLEAN_ENVIRONMENT,
    )
    assert_no_ignored_package_warning(built.stdout + built.stderr)
    [wheel] = into.glob("myticket-*.whl")
    return wheel


def fresh_venv_with(wheel: Path, directory: Path) -> Path:
    """A new venv holding the wheel (not editable); its dependencies are borrowed from
    the test venv's site-packages by path, which runs none of that venv's .pth files,
    so the editable myticket of the checkout stays invisible. Returns its python."""
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(directory)], check=True, timeout=120, env=CLEAN_ENVIRONMENT
    )
    python = directory / "bin" / "python"
    purelib = Path(subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True, env=CLEAN_ENVIRONMENT,
    ).stdout.strip())
    (purelib / "borrowed_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--quiet", str(wheel)],
        check=True, capture_output=True, text=True, timeout=300, env=CLEAN_ENVIRONMENT,
    )
    assert_no_ignored_package_warning(installed.stdout + installed.stderr)
    return python


async def test_a_wheel_installed_in_a_fresh_venv_migrates_and_serves_from_outside_the_checkout(
    pg_server_url: str, tmp_path: Path
):
    python = fresh_venv_with(build_wheel(tmp_path / "dist"), tmp_path / "venv")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    located = subprocess.run(
        [str(python), "-c", "import myticket; print(myticket.__file__)"], cwd=elsewhere, env=CLEAN_ENVIRONMENT,
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert Path(located).is_relative_to(tmp_path / "venv"), located  # the wheel, not the checkout

    database_url = create_empty_database(pg_server_url, "myticket_wheel")
    service = Service(database_url, tmp_path / "data", python=str(python), cwd=elsewhere, LOG_LEVEL="INFO")
    service.env = {**CLEAN_ENVIRONMENT, **{k: v for k, v in service.env.items() if k != "PYTHONPATH"}}

    migrated = await asyncio.to_thread(service.run, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    db = Db(database_url)
    try:
        shipped_ids = sorted(path.name.removesuffix(".sql") for path in (PROJECT_ROOT / "migrations").glob("*.sql")
                             if not path.name.endswith(".rollback.sql"))
        assert [row[0] for row in db.rows("applied_migration_ids")] == shipped_ids

        await service.start()
        try:
            async with aiohttp.ClientSession() as session:
                async with session.post(f"{service.base}/ticket", data=REFERENCE_TICKET) as response:
                    assert response.status == 202
                    ticket_id = (await response.json())["id"]
            [(stored_id, body, _content_type, _status)] = db.rows("ticket_delivery", {"id": ticket_id})
            assert (stored_id, bytes(body)) == (ticket_id, REFERENCE_TICKET)
        finally:
            service.stop()
    finally:
        db.close()

    # The same install without its migrations: a loud failure, not "none to apply".
    shipped = Path(located).parent / "db" / "migrations"
    shutil.rmtree(shipped)
    broken = await asyncio.to_thread(service.run, "migrate")
    assert broken.returncode == 1
    assert "broken installation" in broken.stderr
    assert "migrations" in broken.stderr
