"""Whose spool is it: the rule that a spool's tickets are only ever written for, and
replayed into, the one database they belong to. Pure: no file, no SQLite."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ..core.domain import DatabaseIdentity


class ForeignSpool(Exception):
    """The spool holds tickets for another database than the one this service uses."""


@dataclass(frozen=True)
class SpoolOwner:
    """The database a spool's tickets are for, as recorded in the spool."""

    database_url: str  # password masked
    identity: DatabaseIdentity | None  # None until PostgreSQL has answered

    def __str__(self) -> str:
        return f"{self.identity} ({self.database_url})" if self.identity else f"{self.database_url} (not yet confirmed)"


class Ownership(enum.Enum):
    KEEP = "keep"  # the spool is ours as recorded
    RECORD = "record"  # the spool is ours; record the owner given with the verdict
    FOREIGN = "foreign"  # the spool holds tickets for another database


def ownership(
    owner: SpoolOwner | None, *, holds_tickets: bool, database_url: str, identity: DatabaseIdentity | None
) -> tuple[Ownership, SpoolOwner | None]:
    """Whether a service using `database_url` (whose identity is `identity`, or None while
    PostgreSQL has not answered) may write to and replay from a spool owned by `owner`.

    An empty spool belongs to whoever uses it. Tickets are for their owner: two known
    identities must match; while one side is unknown, only the same URL may use it (and
    the tickets are replayed only once the identity is known to match).
    """
    ours = SpoolOwner(database_url, identity)
    if owner is None:
        return Ownership.RECORD, ours
    if identity is not None and owner.identity is not None:
        if identity == owner.identity:
            return (Ownership.KEEP, None) if owner.database_url == database_url else (Ownership.RECORD, ours)
        return (Ownership.FOREIGN, None) if holds_tickets else (Ownership.RECORD, ours)
    if owner.database_url == database_url:
        merged = SpoolOwner(database_url, identity or owner.identity)
        return (Ownership.KEEP, None) if merged == owner else (Ownership.RECORD, merged)
    return (Ownership.FOREIGN, None) if holds_tickets else (Ownership.RECORD, ours)
