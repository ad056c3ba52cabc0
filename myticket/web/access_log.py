"""MYTICKET_ACCESS_LOG=1: one INFO line per HTTP request on logger `myticket.access`.

Method, path, status, duration, client, and the id a POST /ticket was stored under, in
the message (text) and as fields (json). Off by default: at thousands of tickets a
second the log would be mostly this, and /metrics counts the same requests.
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from .text import printable
from .typedefs import TICKET_ID

ACCESS_LOGGER = "myticket.access"


def access_logger() -> logging.Logger:
    """The access log's logger, at INFO whatever LOG_LEVEL says: turned on, it logs."""
    logger = logging.getLogger(ACCESS_LOGGER)
    logger.setLevel(logging.INFO)
    return logger


class AccessLogger(AbstractAccessLogger):
    """aiohttp's `access_log_class`: one line per answered request."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        ticket_id = request.get(TICKET_ID)
        path = printable(request.raw_path)
        self.logger.info(
            "%s %s %d %.6fs from %s%s", request.method, path, response.status, time, request.remote,
            f" ticket {ticket_id}" if ticket_id else "",
            extra={
                "method": request.method, "path": path, "status": response.status,
                "duration_seconds": round(time, 6), "client": request.remote, "ticket_id": ticket_id,
            },
        )
