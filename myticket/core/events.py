"""Waiting for the first of several events, or a timeout: the one way the worker, the
replayer and the app wait (a stop request, a wake-up, a confirmation, a poll timer)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable


async def first_of(*events: asyncio.Event, timeout: float | None = None, others: tuple[Awaitable, ...] = ()) -> None:
    """Return when any of `events` is set, any of `others` is done, or after `timeout`
    seconds (None: no timeout). `others` are left as they are, done or not; the waits
    on the events are cancelled."""
    waits = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait({*waits, *others}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in waits:
            waiting.cancel()
