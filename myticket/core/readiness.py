"""What GET /ready answers, decided from what a POST would meet now (no I/O)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# How long a failed write speaks for its destination when nothing has been written there
# since: a POST that failed a moment ago would fail again now, but a failure must not
# outlive its cause when no POST comes to clear it (a load balancer that reads 503 sends
# none). After this, /ready goes back to what it can check without writing.
FAILURE_STANDS_SECONDS = 5.0
# Free space the spool's disk must gain after a failed write for the failure to count as
# cleared at once: a few pages, not a byte freed by chance.
FREED_BYTES_CLEAR_A_FAILURE = 64 * 1024


def failure_still_stands(
    *, failed_at: float, now: float, free_then: int | None = None, free_now: int | None = None
) -> bool:
    """Whether a write's failure (at monotonic time `failed_at`) still describes its
    destination: it is recent, and (when the free space of its disk is known) the disk
    has not gained space since."""
    if now - failed_at >= FAILURE_STANDS_SECONDS:
        return False
    if free_then is not None and free_now is not None and free_now - free_then >= FREED_BYTES_CLEAR_A_FAILURE:
        return False
    return True


def readiness(
    *, database_problem: str | None, missing_migrations: Sequence[str], spool: dict[str, Any] | None,
    spool_max_bytes: int, database_refused_writes: str | None = None,
) -> tuple[int, dict[str, Any]]:
    """Status and body of /ready, from what a POST would meet now (no I/O).

    `ready` when the database is confirmed, answers, takes writes and has every
    migration (a POST is stored there, or in the spool, and a spool that refuses falls
    back to it); `spooling` when it does not but the spool takes tickets; otherwise 503,
    as a POST. `database_refused_writes`: why PostgreSQL refused the last batch written
    to it, while that still stands (it may answer reads on a full disk, or read-only,
    and refuse every write): the database then counts as unavailable.
    """
    if database_problem is None and database_refused_writes is not None:
        database_problem = f"unavailable: {database_refused_writes}"
    if database_problem is None:
        if missing_migrations:  # PostgreSQL would refuse the tickets, and so would a replay
            return 503, {"error": f"migrations not applied: {', '.join(missing_migrations)}"}
        return 200, {"status": "ready", "spool": spool}
    spool_takes_tickets = spool is not None and spool["problem"] is None and spool["bytes"] < spool_max_bytes
    if spool_takes_tickets:
        return 200, {"status": "spooling", "database": database_problem, "spool": {**spool, "mode": True}}
    error = f"database {database_problem}"
    if spool is not None and spool["problem"] is not None:
        error = f"{error}; spool: {spool['problem']}"
    return 503, {"error": error}
