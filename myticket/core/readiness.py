"""What GET /ready answers, decided from what a POST would meet now (no I/O)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def readiness(
    *, database_problem: str | None, missing_migrations: Sequence[str], spool: dict[str, Any] | None, spool_max_bytes: int
) -> tuple[int, dict[str, Any]]:
    """Status and body of /ready, from what a POST would meet now (no I/O).

    `ready` when the database is confirmed, answers and has every migration (a POST is
    stored there, or in the spool, and a spool that refuses falls back to it);
    `spooling` when it does not but the spool takes tickets; otherwise 503, as a POST.
    """
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
