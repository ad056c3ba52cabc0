"""The errors of archive, purge and restore (raised by every module of the package;
callers import them from `myticket.archive.commands`)."""

from __future__ import annotations


class ArchiveError(Exception):
    """Archive or restore cannot go on; the message names the file or directory."""


class DayRefused(ArchiveError):
    """Archive leaves this day as it is (its archive file is damaged); the others go on."""
