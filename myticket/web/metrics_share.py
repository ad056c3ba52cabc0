"""The aiohttp side of `telemetry.shared_metrics`: an HTTP process of `serve --processes N`
publishes its totals while it runs, and its /metrics adds the others'."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path

from aiohttp import web

from ..telemetry.shared_metrics import publish_until, share_metrics
from .typedefs import METRICS


async def with_shared_metrics(app: Awaitable[web.Application], directory: Path, index: int) -> web.Application:
    """The application `app` builds, sharing its metrics through `directory` as process `index`."""
    built = await app

    async def sharing(app: web.Application) -> AsyncIterator[None]:
        metrics = app[METRICS]
        share = share_metrics(metrics, directory, index)
        stop = asyncio.Event()
        publisher = asyncio.create_task(publish_until(metrics, share, stop), name="metrics-share")
        yield
        stop.set()
        await publisher

    built.cleanup_ctx.append(sharing)
    return built
