"""Idempotency keys of POST /ticket, decided without I/O: which header is the key, what
a key may hold, and which days of keys are alive.

A key is the client's `Idempotency-Key`, else Standard Webhooks' `webhook-id` (kept
apart by a prefix, so a webhook id never matches a client's key). Keys are kept in day
partitions by the day of their first use: a look-up reads the days from
`oldest_live_day` on, and maintenance drops the days before it, so a key lives at least
its lifetime and at most a day more.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

MAX_KEY_LENGTH = 255
WEBHOOK_ID_PREFIX = "webhook-id:"


class BadIdempotencyKey(ValueError):
    """A key header that is not printable ASCII of 1 to 255 characters."""


@dataclass(frozen=True, slots=True)
class KeyUse:
    """The first use of a key: the ticket it was stored as, and the digest of its body."""

    ticket_id: str
    body_sha256: bytes


def checked_key(header: str, value: str) -> str:
    """`value` if it is 1 to 255 printable ASCII characters, else BadIdempotencyKey."""
    if not value:
        raise BadIdempotencyKey(f"{header} header is empty")
    if len(value) > MAX_KEY_LENGTH:
        raise BadIdempotencyKey(f"{header} header is longer than {MAX_KEY_LENGTH} characters")
    if not all(" " <= character <= "~" for character in value):
        raise BadIdempotencyKey(f"{header} header must be printable ASCII")
    return value


def idempotency_key(idempotency_header: str | None, webhook_id: str | None) -> str | None:
    """The key a request carries: its Idempotency-Key, else its webhook-id (prefixed),
    else None."""
    if webhook_id is not None:
        webhook_id = checked_key("webhook-id", webhook_id)  # checked even when the client's key wins
    if idempotency_header is not None:
        return checked_key("Idempotency-Key", idempotency_header)
    return WEBHOOK_ID_PREFIX + webhook_id if webhook_id is not None else None


def oldest_live_day(now: datetime, lifetime_hours: int) -> date:
    """The first UTC day whose keys are alive: every key of an earlier day was first
    used more than `lifetime_hours` ago."""
    return (now.astimezone(timezone.utc) - timedelta(hours=lifetime_hours)).date()
