"""Typed keys for application state (aiohttp warns on string keys)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from ..config import Settings
    from ..ingest import GroupCommitIngest
    from ..metrics import Metrics
    from ..repository import Repository
    from ..store import DurableStore

SETTINGS = web.AppKey("settings", "Settings")
METRICS = web.AppKey("metrics", "Metrics")
REPOSITORY = web.AppKey("repository", "Repository")
INGEST = web.AppKey("ingest", "GroupCommitIngest")
EXPECTED_MIGRATIONS = web.AppKey("expected_migrations", frozenset)
STORE = web.AppKey("store", "DurableStore")

# The delivery id of the ticket a request carries, for log lines about that request.
TICKET_ID = web.RequestKey("ticket_id", str)
