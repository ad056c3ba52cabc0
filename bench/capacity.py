"""Bytes per stored ticket, by table: `make capacity`.

Stores distinct tickets (bench/loadgen.py, about 2% malformed) through the service's
own ingest statement, lets the worker process them all, vacuums, and reports what each
table takes on disk per ticket (heap, TOAST, indexes) and the WAL written per ticket,
then what a day and a year cost at 1,000 and 10,000 tickets per second at that size. A scratch embedded PostgreSQL;
never part of `make test`. docs/explanation/capacity.md quotes it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.loadgen import make_tickets  # noqa: E402
from bench.scratch import scratch_database  # noqa: E402
from myticket.core.domain import IncomingTicket  # noqa: E402
from myticket.core.ids import new_delivery_id  # noqa: E402
from myticket.telemetry.metrics import Metrics  # noqa: E402
from myticket.db.repository import Repository  # noqa: E402
from myticket.db.resources import named_queries  # noqa: E402
from myticket.worker.loop import TicketWorker  # noqa: E402

QUERIES = named_queries(ROOT / "bench" / "sql")
GIB = 1024**3


async def store_and_process(url: str, bodies: list[bytes], batch: int) -> None:
    """Every body stored as POST /ticket would store it, then processed by the worker."""
    repository = await Repository.connect(url)
    try:
        start = datetime.now(timezone.utc)
        for first in range(0, len(bodies), batch):
            tickets = []
            for offset, body in enumerate(bodies[first:first + batch]):
                delivery_id, received_at = new_delivery_id(start + timedelta(milliseconds=first + offset))
                tickets.append(IncomingTicket(delivery_id, received_at, "text/plain", body))
            await repository.store_tickets(tickets=tickets)
        await TicketWorker(repository, Metrics()).drain()
    finally:
        await repository.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    bodies = make_tickets(args.tickets, seed=7)
    with scratch_database("myticket-capacity-") as url:
        conn = psycopg2.connect(url)
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute(QUERIES["wal_position"])
            wal_start = cursor.fetchone()[0]
        asyncio.run(store_and_process(url, bodies, args.batch))
        with conn.cursor() as cursor:
            cursor.execute(QUERIES["wal_bytes_since"], {"since": wal_start})
            wal_bytes = cursor.fetchone()[0]
            cursor.execute(QUERIES["vacuum"])
            cursor.execute(QUERIES["stored_ticket_figures"])
            tickets, lines, average_body = cursor.fetchone()
            cursor.execute(QUERIES["storage_by_table"])
            tables = cursor.fetchall()
        conn.close()
    print(f"{tickets:,} distinct tickets stored and processed, {lines:,} lines, average body {average_body} bytes")
    print(f"{'table':20} {'heap':>8} {'TOAST':>8} {'indexes':>8} {'total':>8}   (bytes per ticket)")
    total = 0.0
    for family, heap, toast, indexes in tables:
        row = [value / tickets for value in (heap, toast, indexes, heap + toast + indexes)]
        total += row[-1]
        print(f"{family:20} " + " ".join(f"{value:>8.0f}" for value in row))
    print(f"{'all':20} {'':>8} {'':>8} {'':>8} {total:>8.0f}")
    print(f"WAL written while storing and processing: {wal_bytes / tickets:,.0f} bytes per ticket")
    for rate in (1_000, 10_000):
        day = total * rate * 86_400
        print(f"at {rate:,} tickets/s: {day / GIB:,.0f} GiB a day, {day * 365 / 1024**4:,.1f} TiB a year, "
              f"WAL {wal_bytes / tickets * rate / 1024**2:,.1f} MiB/s")


if __name__ == "__main__":
    main()
