"""Nobody else on the machine can use the embedded PostgreSQL: it requires the password
kept beside its data directory (readable by its creator only), and as root the server
runs in its own user's group, not root's. Its start widens no directory above its data
directory, and the spool is private whatever the umask: checked as root, with the local
user `nobody` trying to read."""

from __future__ import annotations

import grp
import os
import re
import stat
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import psycopg2
import pytest

from myticket.db.embedded import EmbeddedPostgres, EmbeddedPostgresError
from myticket.intake.spool import Spool

from ..helpers import ticket_with

from ..service_process import free_port


@pytest.fixture
def server(tmp_path: Path):
    embedded = EmbeddedPostgres(tmp_path / "pgdata", port=free_port())
    embedded.start()
    yield embedded
    if embedded.is_running():
        embedded.stop()


def connect_without_password(port: int):
    return psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")


def test_the_server_requires_the_password_kept_beside_it(server: EmbeddedPostgres, tmp_path: Path):
    password_file = tmp_path / ".pgdata.password"
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    assert password_file.read_text() in server.url

    psycopg2.connect(server.url).close()
    with pytest.raises(psycopg2.OperationalError, match="password"):
        connect_without_password(server.port)


def test_the_server_runs_outside_root_s_group(server: EmbeddedPostgres, tmp_path: Path):
    postmaster = int((tmp_path / "pgdata" / "postmaster.pid").read_text().splitlines()[0])
    status = Path(f"/proc/{postmaster}/status").read_text()
    groups = re.search(r"^Groups:\s*(.*)$", status, re.MULTILINE)[1].split()
    real_gid = int(re.search(r"^Gid:\s*(\d+)", status, re.MULTILINE)[1])
    assert real_gid != 0 and "0" not in groups


def test_a_data_directory_from_before_passwords_requires_one_at_its_next_start(
    server: EmbeddedPostgres, tmp_path: Path
):
    # The state an older release left: trust authentication, no password file.
    server.stop()
    hba = tmp_path / "pgdata" / "pg_hba.conf"
    hba.write_text(re.sub(r"scram-sha-256\s*$", "trust", hba.read_text(), flags=re.MULTILINE))
    (tmp_path / ".pgdata.password").unlink()

    url = server.start()

    psycopg2.connect(url).close()
    with pytest.raises(psycopg2.OperationalError, match="password"):
        connect_without_password(server.port)


def test_a_lost_password_file_is_one_clear_error_not_a_way_in(server: EmbeddedPostgres, tmp_path: Path):
    server.stop()
    (tmp_path / ".pgdata.password").unlink()

    with pytest.raises(EmbeddedPostgresError, match="password"):
        server.start()
    assert not server.is_running()  # a failed start leaves nothing running


def modes_above(path: Path) -> dict[Path, int]:
    return {directory: stat.S_IMODE(directory.stat().st_mode) for directory in path.parents}


def nobody_can_read(path: Path) -> bool:
    """Whether the local user `nobody` can read `path` (a directory: list it)."""
    command = ["ls", str(path)] if path.is_dir() else ["cat", str(path)]
    return subprocess.run(command, user="nobody", capture_output=True).returncode == 0


def test_the_start_widens_no_directory_above_the_data_directory_and_refuses_what_it_cannot_reach(tmp_path: Path):
    tmp_path.chmod(0o711)  # pytest's own directory: let through, like those above it (conftest)
    private = tmp_path / "private"  # as `mktemp -d` makes it
    private.mkdir(mode=0o700)
    private.chmod(0o700)
    data_dir = private / "data"
    data_dir.mkdir()
    pgdata = data_dir / "pgdata"
    before = modes_above(pgdata)

    blocked = f"MYTICKET_DATA_DIR.*chmod o\\+x {re.escape(str(private))}\\)$"
    with pytest.raises(EmbeddedPostgresError, match=blocked) as refused:
        EmbeddedPostgres(pgdata, port=free_port()).start()
    assert "\n" not in str(refused.value)
    assert modes_above(pgdata) == before  # the wheel's helper made `private` 0755

    # The operator lets the server's user through (traverse only); the start changes no mode above.
    private.chmod(0o711)
    data_dir.chmod(0o700)
    before = modes_above(data_dir)
    server = EmbeddedPostgres(pgdata, port=free_port())
    server.start()
    try:
        assert modes_above(data_dir) == before
        # Its own directory goes to the server's group, traverse only: nobody else gets in.
        assert stat.S_IMODE(data_dir.stat().st_mode) == 0o710
        assert grp.getgrgid(data_dir.stat().st_gid).gr_name == "embedded_postgres"
        assert not nobody_can_read(data_dir)
        assert not nobody_can_read(data_dir / ".pgdata.password")
        psycopg2.connect(server.url).close()
    finally:
        server.stop()


async def test_the_spool_is_private_whatever_the_umask(tmp_path: Path):
    previous = os.umask(0)
    try:
        spool = Spool(tmp_path / "spool", max_bytes=10_000_000)
        await spool.write([ticket_with("1", "P1", "Tea", "1.50", received_at=datetime.now(timezone.utc))])
    finally:
        os.umask(previous)
    try:
        files = sorted(spool.directory.iterdir())
        assert [file.name for file in files] == ["spool.sqlite3", "spool.sqlite3-shm", "spool.sqlite3-wal"]
        assert stat.S_IMODE(spool.directory.stat().st_mode) == 0o700
        assert {file.name: stat.S_IMODE(file.stat().st_mode) for file in files} == {
            file.name: 0o600 for file in files
        }
        # Even where the directory lets others through, the files do not.
        spool.directory.chmod(0o755)
        tmp_path.chmod(0o755)
        assert [nobody_can_read(file) for file in files] == [False, False, False]
        assert b"Tea" in (spool.directory / "spool.sqlite3-wal").read_bytes()  # what nobody could not read
    finally:
        await spool.close()
