"""Connection caps, enforced when a connection is accepted, before aiohttp sees it.

A process has a cap on its open connections (MYTICKET_MAX_CONNECTIONS, by default its
file-descriptor limit less a reserve: so `accept()` never fails for lack of a
descriptor and the spool and PostgreSQL stay reachable), and each sender a cap of its
own (MYTICKET_MAX_CONNECTIONS_PER_SENDER), so that one address holding idle or slow
connections cannot take them all. A connection over a cap is answered at once (429 when
its sender is at its cap, 503 when the process is full) and closed: it costs no request
parsing and holds no memory. Here the sender is the peer address (no header has been
read yet); a trusted proxy's connections carry many senders and meet the process's cap
only.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ..core.senders import Network, is_trusted, sender_key
from ..intake.shares import SenderShares, Shortage
from ..telemetry.metrics import Metrics, RefusalReason
from ..telemetry.refusal_log import refused
from .errors import RETRY_AFTER_OVERLOADED
from .typedefs import METRICS

log = logging.getLogger(__name__)


# The most one read from a connection takes (asyncio's default: 256 KiB). Each read is a
# new bytes object, and hundreds of connections flooding request heads that will be
# refused made the process's memory grow by their reads, not by the heads it keeps.
READ_CHUNK_BYTES = 64 * 1024


@dataclass(frozen=True)
class ConnectionLimits:
    total: int
    per_sender: int
    trusted_proxies: tuple[Network, ...] = ()


def _refusal_answer(status: int, reason: str, message: str) -> bytes:
    body = json.dumps({"error": message}).encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"Retry-After: {RETRY_AFTER_OVERLOADED}\r\nConnection: close\r\n\r\n"
    ).encode() + body


SENDER_AT_CAP = _refusal_answer(
    429, "Too Many Requests", "this sender has its share of open connections (MYTICKET_MAX_CONNECTIONS_PER_SENDER)"
)
PROCESS_AT_CAP = _refusal_answer(503, "Service Unavailable", "too many open connections (MYTICKET_MAX_CONNECTIONS)")


class ConnectionGate:
    """The open connections of one process, by sender; which to admit."""

    def __init__(self, limits: ConnectionLimits, metrics: Metrics | None = None) -> None:
        self.limits = limits
        self.shares = SenderShares(limits.total, limits.per_sender)
        self.metrics = metrics

    @property
    def open(self) -> int:
        return self.shares.total

    def admit(self, peer: str | None) -> tuple[str, Shortage | None]:
        """The connection's sender key, and None when it is admitted (and counted),
        else the cap that refuses it."""
        sender = sender_key(peer, (), ())
        shortage = self.shares.take(sender, 1, within_share=not is_trusted(peer, self.limits.trusted_proxies))
        if shortage is not None:
            reason = RefusalReason.SENDER_CONNECTIONS if shortage is Shortage.SENDER_SHARE else RefusalReason.CONNECTIONS
            if self.metrics is not None:
                self.metrics.refuse(reason)
            refused(
                log, logging.INFO, f"connection refused ({reason.value})",
                "connection from %s refused at accept (%s: %d open)", sender, reason.value, self.open,
            )
        return sender, shortage

    def closed(self, sender: str) -> None:
        self.shares.give_back(sender, 1)


class _GatedConnection(asyncio.Protocol):
    """The protocol asyncio sees for one connection: it asks the gate, then hands the
    connection to aiohttp's RequestHandler, made only for an admitted connection."""

    __slots__ = ("_server", "_gate", "_handler", "_sender")

    def __init__(self, server: web.Server, gate: ConnectionGate) -> None:
        self._server = server
        self._gate = gate
        self._handler: Any = None
        self._sender: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        sender, shortage = self._gate.admit(peer[0] if isinstance(peer, tuple) and peer else None)
        if shortage is not None:
            assert isinstance(transport, asyncio.Transport)
            transport.write(SENDER_AT_CAP if shortage is Shortage.SENDER_SHARE else PROCESS_AT_CAP)
            transport.close()
            return
        self._sender = sender
        if hasattr(transport, "max_size"):
            transport.max_size = READ_CHUNK_BYTES
        self._handler = self._server()
        self._handler.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._handler is not None:
            self._handler.data_received(data)

    def eof_received(self) -> bool | None:
        return self._handler.eof_received() if self._handler is not None else None

    def pause_writing(self) -> None:
        if self._handler is not None:
            self._handler.pause_writing()

    def resume_writing(self) -> None:
        if self._handler is not None:
            self._handler.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._handler is None:
            return
        assert self._sender is not None
        self._gate.closed(self._sender)
        self._handler.connection_lost(exc)


class GatedServer:
    """aiohttp's Server, whose connections pass a ConnectionGate first: the protocol
    factory asyncio calls; everything else is the Server's."""

    def __init__(self, server: web.Server, gate: ConnectionGate) -> None:
        self._server = server
        self.gate = gate

    def __call__(self) -> _GatedConnection:
        return _GatedConnection(self._server, self.gate)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._server, name)


class GatedAppRunner(web.AppRunner):
    """An AppRunner whose server is a GatedServer (aiohttp has no public hook for the
    protocol factory: `_make_server` is the one place the runner builds it)."""

    def __init__(self, app: web.Application, *, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.limits = limits

    async def _make_server(self) -> Any:
        server = await super()._make_server()
        return GatedServer(server, ConnectionGate(self.limits, self.app[METRICS]))
