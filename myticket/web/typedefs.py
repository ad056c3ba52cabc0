"""Typed keys for application state (aiohttp warns on string keys), and the handler type."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from ..intake.budget import ByteBudget
    from ..config import Settings
    from ..intake.group_commit import GroupCommitIngest
    from ..telemetry.metrics import Metrics
    from ..db.repository import Repository
    from ..intake.store import DurableStore

SETTINGS = web.AppKey("settings", "Settings")
METRICS = web.AppKey("metrics", "Metrics")
REPOSITORY = web.AppKey("repository", "Repository")
INGEST = web.AppKey("ingest", "GroupCommitIngest")
EXPECTED_MIGRATIONS = web.AppKey("expected_migrations", frozenset)
STORE = web.AppKey("store", "DurableStore")
# Bytes of request bodies being read or waiting for storage (MYTICKET_MAX_PENDING_BYTES).
BODY_BUDGET = web.AppKey("body_budget", "ByteBudget")

# The delivery id of the ticket a request carries, for log lines about that request.
TICKET_ID = web.RequestKey("ticket_id", str)

# What a middleware calls: the next middleware, or the route's handler.
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
