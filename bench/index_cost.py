"""What each index on the ingest path costs PostgreSQL: `make bench-indexes`.

The issue asked to keep per-insert index maintenance on the ingest path to what the
queries need, and to measure each index kept. The ingest statement (`insert_tickets`,
run exactly as the service runs it) writes two tables, each with one index: the key of
`deliveries` (idempotent replay, reads by id) and the key of `pending_tickets` (the
claim order). This inserts the same distinct tickets, in batches as group commit forms
them, with all indexes, and with each one dropped in turn, on a scratch embedded
PostgreSQL, and reports the CPU time of the inserting server process per ticket.
Variants are interleaved and repeated; figures are medians. Never part of `make test`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.loadgen import make_tickets  # noqa: E402
from bench.run import _cpu_seconds  # noqa: E402
from bench.scratch import scratch_database  # noqa: E402
from myticket.core.ids import new_delivery_id  # noqa: E402
from myticket.core.processing import body_lines  # noqa: E402
from myticket.db.resources import load_queries, named_queries  # noqa: E402

BENCH_QUERIES = named_queries(ROOT / "bench" / "sql")
SERVICE_QUERIES = load_queries()
# variant -> (the named query that drops its index, the one that puts it back)
VARIANTS = {
    "all indexes": (None, None),
    "without deliveries (id, received_at)": ("drop_deliveries_key", "add_deliveries_key"),
    "without pending_tickets (received_at, id)": ("drop_queue_key", "add_queue_key"),
}


def insert_all(cursor, bodies: list[bytes], batch: int) -> None:
    """The service's ingest statement over every body, `batch` tickets per statement,
    with ids and reception times made as POST /ticket makes them (spread over a minute)."""
    start = datetime.now(timezone.utc)
    for first in range(0, len(bodies), batch):
        chunk = bodies[first:first + batch]
        pairs = [new_delivery_id(start + timedelta(milliseconds=first + n)) for n in range(len(chunk))]
        cursor.execute(SERVICE_QUERIES["insert_tickets"], {
            "ids": [delivery_id for delivery_id, _ in pairs],
            "received_at": [received_at for _, received_at in pairs],
            "content_types": ["text/plain"] * len(chunk),
            "bodies": chunk,
            "body_lines": [body_lines(body) for body in chunk],
            # No ticket of the batch carries an Idempotency-Key: nothing for the key table.
            "key_ids": [], "key_received_at": [], "keys": [], "key_digests": [],
        })


def measure(url: str, bodies: list[bytes], batch: int, variant: str) -> float:
    """CPU microseconds of the server process per ticket inserted, for one variant."""
    drop, add = VARIANTS[variant]
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cursor:
            cursor.execute(BENCH_QUERIES["empty_ingest_tables"])
            if drop:
                cursor.execute(BENCH_QUERIES[drop])
            cursor.execute(BENCH_QUERIES["backend_pid"])
            backend = cursor.fetchone()[0]
            before = _cpu_seconds(backend)
            insert_all(cursor, bodies, batch)
            used = _cpu_seconds(backend) - before
            if add:
                cursor.execute(BENCH_QUERIES["empty_ingest_tables"])
                cursor.execute(BENCH_QUERIES[add])
    finally:
        conn.close()
    return used * 1e6 / len(bodies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=256, help="tickets per INSERT (MYTICKET_BATCH_MAX_SIZE)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    bodies = make_tickets(args.tickets, seed=12)
    with scratch_database("myticket-index-cost-") as url:
        figures: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
        for _ in range(args.repeats):
            for variant in VARIANTS:
                figures[variant].append(measure(url, bodies, args.batch, variant))
    baseline = statistics.median(figures["all indexes"])
    print(f"{args.tickets:,} distinct tickets, {args.batch} per INSERT, median of {args.repeats}")
    print(f"{'variant':45} {'PG CPU µs/ticket':>18} {'index share':>12}")
    for variant, values in figures.items():
        median = statistics.median(values)
        share = "" if variant == "all indexes" else f"{(baseline - median) / baseline:>11.0%}"
        print(f"{variant:45} {median:>18.1f} {share:>12}")


if __name__ == "__main__":
    main()
