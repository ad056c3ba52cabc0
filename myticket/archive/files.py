"""Durable, private files in an archive directory (blocking calls: run them in a
thread): files made 0600 before their first byte, atomic replacement, fsync of a
directory after a rename, the directory's lock, and the one check of a file against
the digest its manifest lists."""

from __future__ import annotations

import contextlib
import enum
import fcntl
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from .errors import ArchiveError
from .format import (
    MANIFEST_NAME,
    ArchiveFormatError,
    listed_sha256,
    parse_manifest,
    partial_file_name,
)

# Held (flock) while an archive writes into a directory: two archives never write the
# same manifest at once, and a partial file found while holding it is a crash's leftover.
LOCK_FILE_NAME = ".archive.lock"
# Archive files hold every ticket's body: readable by their owner only, in a directory
# (when archive makes it) only its owner can list.
FILE_MODE = 0o600
DIRECTORY_MODE = 0o700


def fsync_directory(directory: Path) -> None:
    """Make a rename in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_private(path: Path) -> IO[bytes]:
    """`path` created (or emptied) for writing, FILE_MODE whatever the umask, before any
    byte is written."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # an older file keeps its mode through O_CREAT
        return os.fdopen(fd, "wb")
    except BaseException:
        os.close(fd)
        raise


def write_atomically(path: Path, content: bytes) -> None:
    """Replace `path` with `content` so that a crash leaves the old or the new, whole."""
    partial = path.with_name(partial_file_name(path.name, os.getpid()))
    with open_private(partial) as file:
        file.write(content)
        file.flush()
        os.fsync(file.fileno())
    os.replace(partial, path)
    fsync_directory(path.parent)


def _open_lock_file(path: Path) -> IO[bytes]:
    """The lock file, private to its owner like everything archive writes."""
    return os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE), "r+b")


@contextlib.contextmanager
def directory_lock(directory: Path) -> Iterator[None]:
    """The directory's archive lock, or ArchiveError when another archive holds it."""
    with _open_lock_file(directory / LOCK_FILE_NAME) as lock:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ArchiveError(f"{directory}: another archive is writing there now; try again later") from None
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def make_directory(directory: Path) -> None:
    """The archive directory, made when missing; ArchiveError when the path is taken by
    something else (mkdir's own error would be "File exists")."""
    if directory.is_file():
        raise ArchiveError(f"{directory}: is a file, not a directory")
    if directory.exists() and not directory.is_dir():
        raise ArchiveError(f"{directory}: is not a directory")
    missing = [path for path in (directory, *directory.parents) if not path.exists()]
    # Outermost first, each private whatever the umask: a directory archive makes is
    # never open to other users, parents included (one could swap the leaf otherwise).
    for path in reversed(missing):
        try:
            path.mkdir(mode=DIRECTORY_MODE)
        except FileExistsError:
            continue  # made by someone else meanwhile: its mode is theirs
        os.chmod(path, DIRECTORY_MODE)


def read_manifest(directory: Path) -> dict[str, Any] | None:
    """The directory's manifest, None when it has none; ArchiveError when it is not one."""
    path = directory / MANIFEST_NAME
    try:
        return parse_manifest(path.read_bytes())
    except FileNotFoundError:
        return None
    except ArchiveFormatError as exc:
        raise ArchiveError(f"{path}: {exc}") from None


def listed_digest(manifest: dict[str, Any] | None, file_name: str) -> str | None:
    """The SHA-256 `manifest` lists for `file_name`; None when it does not, or when the
    directory has no manifest."""
    return None if manifest is None else listed_sha256(manifest, file_name)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


class Mismatch(enum.Enum):
    """What keeps a file from being the one its manifest lists."""

    NOT_LISTED = "not listed"  # no digest listed for it: no manifest, or not in it
    CHANGED = "changed"  # its SHA-256 is not the one listed


def check_listed(path: Path, listed: str | None) -> Mismatch | None:
    """Whether `path` is the file listed with digest `listed` (what `listed_digest`
    gives): None when it is, else what is wrong. Hashed only when listed; OSError
    (FileNotFoundError when it is gone) when it cannot be read. The caller decides what
    a mismatch means for it."""
    if listed is None:
        return Mismatch.NOT_LISTED
    if file_sha256(path) != listed:
        return Mismatch.CHANGED
    return None
