"""What the three indexes of GET /tickets cost processing: `python bench/search_index_cost.py`.

They are written by the worker (outcomes and lines), not on the ingest path. This stores
the same distinct tickets with the service's ingest statement, then drains them with the
service's worker (`TicketWorker.drain`), with the indexes and without them, interleaved
and repeated on a scratch PostgreSQL, and reports PostgreSQL's CPU per ticket processed
(its whole process tree) and the indexes' bytes per ticket. Medians; compare within one
run. Never part of `make test`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from pathlib import Path

import psycopg2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.index_cost import insert_all  # noqa: E402
from bench.loadgen import make_tickets  # noqa: E402
from bench.run import CpuMeter  # noqa: E402
from bench.scratch import scratch_database  # noqa: E402
from myticket.db.repository import Repository  # noqa: E402
from myticket.db.resources import named_queries  # noqa: E402
from myticket.telemetry.metrics import Metrics  # noqa: E402
from myticket.worker.loop import TicketWorker  # noqa: E402

QUERIES = named_queries(ROOT / "bench" / "sql")


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


async def drain(url: str, meter: CpuMeter) -> float:
    """PostgreSQL CPU seconds while the worker processes every pending ticket."""
    repository = await Repository.connect(url)
    try:
        before = meter.read()["pg"]
        await TicketWorker(repository, Metrics()).drain()
        return meter.read()["pg"] - before  # read before the pool closes: its backends count
    finally:
        await repository.close()


def measure(url: str, bodies: list[bytes], with_indexes: bool) -> tuple[float, dict[str, int]]:
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cursor:
            cursor.execute(QUERIES["empty_ticket_tables"])
            if not with_indexes:
                cursor.execute(QUERIES["drop_search_indexes"])
            insert_all(cursor, bodies, 256)
            cursor.execute(QUERIES["postmaster_pid"])
            postmaster = parent_of(cursor.fetchone()[0])
            used = asyncio.run(drain(url, CpuMeter({"pg": [postmaster]})))
            sizes: dict[str, int] = {}
            if with_indexes:
                cursor.execute(QUERIES["search_index_bytes"])
                sizes = dict(cursor.fetchall())
            else:
                cursor.execute(QUERIES["add_search_indexes"])
    finally:
        conn.close()
    return used * 1e6 / len(bodies), sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=30_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    bodies = make_tickets(args.tickets, seed=20)
    figures: dict[bool, list[float]] = {True: [], False: []}
    sizes: dict[str, int] = {}
    with scratch_database("myticket-search-index-cost-") as url:
        for _ in range(args.repeats):
            for with_indexes in (True, False):
                used, measured_sizes = measure(url, bodies, with_indexes)
                figures[with_indexes].append(used)
                sizes = measured_sizes or sizes
    with_all, without = statistics.median(figures[True]), statistics.median(figures[False])
    print(f"{args.tickets:,} distinct tickets processed by the worker, median of {args.repeats}")
    print(f"PostgreSQL CPU per ticket: {with_all:.1f} µs with the search indexes, {without:.1f} µs without "
          f"({(with_all - without) / with_all:.0%} of it theirs); runs {figures}")
    for name, size in sizes.items():
        print(f"  {name}: {size / args.tickets:.1f} bytes per ticket")


if __name__ == "__main__":
    main()
