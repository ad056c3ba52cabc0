"""Nobody else on the machine can use the embedded PostgreSQL: it requires the password
kept beside its data directory (readable by its creator only), and as root the server
runs in its own user's group, not root's."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import psycopg2
import pytest

from myticket.db.embedded import EmbeddedPostgres, EmbeddedPostgresError

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
