"""The spool's SQLite file: opened and set up on first use, measured on disk, and moved
aside when SQLite cannot read it, so that one damaged file never stops the service.

SQLite keeps a write-ahead log and a shared-memory index beside the file: they count
in its size on disk and move with it into quarantine.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import stat
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TypeVar

# The spool's lines keep one logger, whichever of its modules writes them.
log = logging.getLogger("myticket.intake.spool")

SPOOL_FILE = "spool.sqlite3"
# SQLite keeps its write-ahead log and its shared-memory index beside the file.
COMPANION_SUFFIXES = ("-wal", "-shm")
# Receipts are personal data: the spool is its owner's alone.
PRIVATE_DIRECTORY = 0o700
PRIVATE_FILE = 0o600
QUARANTINE_MARK = ".corrupt-"
# Primary result codes of a file SQLite cannot read as a database.
SQLITE_CORRUPT = 11
SQLITE_NOTADB = 26

Result = TypeVar("Result")


class SpoolUnavailable(Exception):
    """The spool is full or cannot be written: the ticket is not acknowledged."""


def is_corruption(exc: BaseException) -> bool:
    """Whether SQLite says the file is not a readable database (not a busy or full disk)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.DatabaseError) and code is not None and code & 0xFF in (SQLITE_CORRUPT, SQLITE_NOTADB)


def quarantine_name(path: Path, now: datetime) -> Path:
    """Where an unreadable spool file is moved: beside it, named with the UTC time."""
    return path.with_name(f"{path.name}{QUARANTINE_MARK}{now.astimezone(timezone.utc):%Y%m%dT%H%M%S.%fZ}")


class SpoolFile:
    """One spool file and its connection, used from one thread at a time (a SQLite
    connection belongs to the thread that opened it)."""

    def __init__(self, directory: Path, queries: Mapping[str, str]) -> None:
        self.directory = directory
        self.path = directory / SPOOL_FILE
        self._queries = queries
        self._connection: sqlite3.Connection | None = None
        self._opened_inode: int | None = None

    def connection(self) -> sqlite3.Connection:
        """The open connection, made (and the file made a spool) on first use."""
        if self._connection is None:
            self._make_private()
            connection = sqlite3.connect(self.path, timeout=10, isolation_level=None)
            try:
                connection.execute(self._queries["sync_fully"])
                connection.execute(self._queries["limit_wal_after_checkpoint"])
                self._set_up(connection)
                self._opened_inode = self.path.stat().st_ino
            except (sqlite3.Error, OSError):
                connection.close()
                raise
            self._connection = connection
        return self._connection

    def _make_private(self) -> None:
        """The spool holds receipts: its directory 0700 and its files 0600, whatever the
        umask (a file made under the usual 022 was readable by every local user). The
        file is made here, before SQLite opens it; SQLite gives its WAL and shared-memory
        files the mode of the file. A spool of an earlier release is made private too. A
        directory shared with others (sticky, like /tmp) or not ours keeps its mode: the
        files are private all the same."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIRECTORY)
        directory = self.directory.stat()
        if (directory.st_uid == os.geteuid() and not directory.st_mode & stat.S_ISVTX
                and stat.S_IMODE(directory.st_mode) != PRIVATE_DIRECTORY):
            self.directory.chmod(PRIVATE_DIRECTORY)
        with contextlib.suppress(FileExistsError):
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))
        for suffix in ("", *COMPANION_SUFFIXES):
            companion = Path(f"{self.path}{suffix}")
            try:
                if stat.S_IMODE(companion.stat().st_mode) & ~PRIVATE_FILE:
                    companion.chmod(PRIVATE_FILE)
            except FileNotFoundError:
                pass
            except PermissionError as exc:  # not ours: used as it is, and said
                log.warning("spool file %s could not be made private: %s", companion, exc)

    def _set_up(self, connection: sqlite3.Connection) -> None:
        """Make a new file a spool (vacuum mode, WAL, tables). These statements may write;
        on a full disk they fail, and a file that is a spool already is used as it is, so
        that its tickets can still be read and replayed."""
        try:
            connection.execute(self._queries["vacuum_incrementally"])
            connection.execute(self._queries["use_write_ahead_log"])
            connection.execute(self._queries["create_spool_table"])
            connection.execute(self._queries["create_owner_table"])
        except sqlite3.OperationalError as exc:
            if not connection.execute(self._queries["is_a_spool"]).fetchone()[0]:
                raise
            log.debug("spool %s: set-up skipped on an existing spool (%s)", self.path, exc)

    def guarded(self, what: str, operation: Callable[..., Result], *args) -> Result:
        """Run `operation`; a file SQLite cannot read is moved aside once and the
        operation retried on a fresh spool. Any other failure is SpoolUnavailable."""
        for attempt in (1, 2):
            try:
                return operation(*args)
            except (sqlite3.Error, OSError) as exc:
                self.close()
                if attempt == 1 and is_corruption(exc):
                    self._quarantine(exc)
                    continue
                raise SpoolUnavailable(f"spool not {what}: {type(exc).__name__}: {exc}") from exc
        raise AssertionError("unreachable")

    def _quarantine(self, cause: BaseException) -> None:
        """Move the unreadable file (and its WAL and shared memory) aside, loudly."""
        try:
            if self._opened_inode is not None and self.path.stat().st_ino != self._opened_inode:
                # Another process already replaced it: the file there now is a fresh one.
                self._opened_inode = None
                return
        except FileNotFoundError:
            return
        target = quarantine_name(self.path, datetime.now(timezone.utc))
        for suffix in ("", *COMPANION_SUFFIXES):
            source = Path(f"{self.path}{suffix}")
            if source.exists():
                os.replace(source, Path(f"{target}{suffix}"))
        self._opened_inode = None
        log.error(
            "spool %s cannot be read (%s): moved aside to %s, and a fresh spool is used; tickets it held "
            "were not replayed (recover them with `sqlite3 %s .recover`)",
            self.path, cause, target.name, target,
        )

    def quarantined_files(self) -> list[str]:
        """Spool files moved aside as unreadable, still in the spool directory."""
        try:
            names = [entry.name for entry in self.directory.iterdir()]
        except OSError:
            return []
        prefix = f"{SPOOL_FILE}{QUARANTINE_MARK}"
        return sorted(name for name in names if name.startswith(prefix) and not name.endswith(COMPANION_SUFFIXES))

    def bytes_on_disk(self) -> int:
        """What the spool occupies on disk: the file, its WAL and its shared memory."""
        total = 0
        for suffix in ("", *COMPANION_SUFFIXES):
            try:
                total += os.stat(f"{self.path}{suffix}").st_size
            except OSError:  # absent, or no directory to hold it: nothing on disk
                pass
        return total

    def close(self) -> None:
        """Close the connection; the next use opens a new one (after a failure, or on
        another thread)."""
        if self._connection is not None:
            try:
                self._connection.close()
            finally:
                self._connection = None
