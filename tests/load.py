"""Load for the process tests: distinct tickets, and a sender that keeps a ledger of
the ids the service acknowledged, so a test can check that each one was stored.

The sender writes HTTP/1.1 by hand on asyncio streams over keep-alive connections: a
request whose connection fails is counted and never sent again (a retry would hide
the loss the fault tests look for), and it costs little CPU beside the service's.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field


def make_tickets(count: int, *, seed: int) -> list[bytes]:
    """`count` valid tickets, each distinct (its own order number), from a seeded random."""
    rng = random.Random(seed)
    tickets = []
    for number in range(count):
        prices = [rng.randrange(50, 5000) for _ in range(rng.randint(1, 6))]
        products = [rng.randrange(5000) for _ in prices]
        total = sum(prices)
        lines = [
            f"Order: {seed}-{number}",
            f"VAT: {euros(total // 10)}",
            f"Total: {euros(total)}",
            "",
            "product,product_id,price",
            *(f"Article {product},A{product:05d},{euros(cents)}" for product, cents in zip(products, prices)),
        ]
        tickets.append(("\n".join(lines) + "\n").encode())
    return tickets


def euros(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


@dataclass
class SendResult:
    """The ledger: for each ticket (its index) the id answered with a 2xx, every status
    received, and the requests whose connection failed before an answer."""

    acked: dict[int, str] = field(default_factory=dict)
    statuses: Counter = field(default_factory=Counter)
    connection_errors: int = 0


async def send_tickets(
    host: str, port: int, bodies: list[bytes], *, concurrency: int, deadline_seconds: float = 600.0,
    result: SendResult | None = None,
) -> SendResult:
    """POST each body once, from `concurrency` clients, until all are sent or the deadline
    passes. Pass `result` to watch the ledger while the load runs."""
    result = result if result is not None else SendResult()
    pending = iter(enumerate(bodies))
    deadline = time.monotonic() + deadline_seconds

    async def client() -> None:
        connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        for index, body in pending:
            if time.monotonic() > deadline:
                break
            try:
                if connection is None:
                    connection = await asyncio.open_connection(host, port)
                status, answer = await post_ticket(*connection, host, body)
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
                result.connection_errors += 1
                if connection is not None:
                    connection[1].close()
                connection = None
                continue
            result.statuses[status] += 1
            if 200 <= status < 300:
                result.acked[index] = json.loads(answer)["id"]
        if connection is not None:
            connection[1].close()

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return result


async def post_ticket(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, body: bytes
) -> tuple[int, bytes]:
    """One POST /ticket on an open keep-alive connection: the status and the answer's body."""
    writer.write(
        b"POST /ticket HTTP/1.1\r\nHost: " + host.encode() + b"\r\nContent-Type: text/plain\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split(" ", 2)[1])
    headers = dict(line.split(":", 1) for line in header_lines if ":" in line)
    length = int({name.strip().lower(): value for name, value in headers.items()}.get("content-length", "0"))
    return status, await reader.readexactly(length)
