"""Distinct, realistic tickets and a lean HTTP/1.1 client that records every acknowledgement.

hey repeats one body, so it cannot measure processing (every ticket after the first is
a duplicate) nor tell which ticket was acknowledged. This generator makes distinct
tickets (different orders and products, about 2% malformed) and sends them over
keep-alive connections written by hand on asyncio streams, cheap enough not to steal
the server's CPU. The fault tests use it too: `acked` maps each acknowledged ticket to
the id the service answered, so they can check that every one of them is stored.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field

MALFORMED_VARIANTS = (
    lambda lines: lines[:-1] + [lines[-1].rsplit(",", 1)[0] + ",abc"],  # price not a number
    lambda lines: lines[:5] + [lines[5].split(",")[0] + ",,1.00"] + lines[6:],  # missing product_id
    lambda lines: lines[:3],  # no product section
    lambda lines: lines[:-1] + [lines[-1].rsplit(",", 1)[0] + ",-4.00"],  # negative price
)


def make_tickets(count: int, *, seed: int, malformed_ratio: float = 0.02, catalogue: int = 5000) -> list[bytes]:
    """`count` distinct ticket bodies; about `malformed_ratio` of them are rejected by the parser."""
    rng = random.Random(seed)
    bodies = []
    for number in range(count):
        lines_count = rng.randint(1, 6)
        products = []
        total = 0
        for _ in range(lines_count):
            product = rng.randrange(catalogue)
            cents = rng.randrange(50, 5000)
            total += cents
            products.append(f"Produit {product},P{product:05d},{cents // 100}.{cents % 100:02d}")
        vat = total // 10
        lines = [
            f"Order: {seed}-{number}",
            f"VAT: {vat // 100}.{vat % 100:02d}",
            f"Total: {total // 100}.{total % 100:02d}",
            "",
            "product,product_id,price",
            *products,
        ]
        if rng.random() < malformed_ratio:
            lines = rng.choice(MALFORMED_VARIANTS)(lines)
        bodies.append(("\n".join(lines) + "\n").encode())
    return bodies


@dataclass
class SendResult:
    acked: dict[int, str] = field(default_factory=dict)  # ticket index -> answered id
    statuses: Counter = field(default_factory=Counter)
    connection_errors: int = 0
    latencies: list[float] = field(default_factory=list)
    # perf_counter() when each answered request was sent, in the order of `latencies`:
    # what a burst's first second is cut from.
    sent_at: list[float] = field(default_factory=list)
    elapsed: float = 0.0

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length)


async def send_tickets(
    host: str, port: int, bodies: list[bytes], *, concurrency: int, deadline_seconds: float = 600.0,
    headers: dict[str, str] | None = None, result: SendResult | None = None,
) -> SendResult:
    """POST each body once to /ticket; a body whose connection fails is not retried.

    Pass `result` to watch acknowledgements while the load runs (the fault tests do).
    """
    result = result if result is not None else SendResult()
    next_index = iter(range(len(bodies)))
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    deadline = time.monotonic() + deadline_seconds

    async def client() -> None:
        reader = writer = None
        for index in next_index:
            if time.monotonic() > deadline:
                return
            body = bodies[index]
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, port)
                writer.write(
                    f"POST /ticket HTTP/1.1\r\nHost: {host}\r\nContent-Type: text/plain\r\n{extra}"
                    f"Content-Length: {len(body)}\r\n\r\n".encode() + body
                )
                started = time.perf_counter()
                status, answer = await _read_response(reader)
                result.latencies.append(time.perf_counter() - started)
                result.sent_at.append(started)
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
                result.connection_errors += 1
                if writer is not None:
                    writer.close()
                reader = writer = None
                continue
            result.statuses[status] += 1
            if 200 <= status < 300:
                result.acked[index] = answer.split(b'"id": "', 1)[1].split(b'"', 1)[0].decode()
        if writer is not None:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    result.elapsed = time.perf_counter() - started
    return result
