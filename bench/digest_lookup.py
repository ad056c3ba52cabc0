"""The duplicate look-up at 1, 30 and 90 days kept, before and after migration 0007.

Why: with digests partitioned by day, each batch's look-up probed every kept day's
partition, and PostgreSQL's CPU per ticket grew with the retention (`make bench-scale`).
This fills a scratch PostgreSQL with `--per-day` digests a day, in the day-partitioned
table as it was and in the shipped one (one table, same key), and times the worker's
look-up of a batch (`--batch` digests: new ones, as distinct tickets bring, and known
ones, as duplicates do) in both, and the maintenance statement that deletes a purged
day's digests. Times are the server's (EXPLAIN ANALYZE: planning + execution), medians
of `--repeats`. Never part of `make test`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import statistics
import sys
from datetime import date, datetime, time, timezone
from pathlib import Path

import psycopg2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.scratch import scratch_database  # noqa: E402
from myticket.db.resources import load_queries, named_queries  # noqa: E402

BENCH_QUERIES = named_queries(ROOT / "bench" / "sql")
SERVICE_QUERIES = load_queries()
FIRST_DAY = date(2026, 1, 1)


def server_ms(cursor, query: str, params: dict) -> float:
    """Planning + execution time of one run of `query`, as the server measured it."""
    cursor.execute("EXPLAIN (ANALYZE, SUMMARY, FORMAT JSON) " + query, params)
    [[document]] = cursor.fetchall()
    plan = document[0] if isinstance(document, list) else json.loads(document)[0]
    return plan["Planning Time"] + plan["Execution Time"]


def known_digests(days: int, per_day: int, count: int, rng: random.Random) -> list[bytes]:
    return [hashlib.sha256(f"digest {n}".encode()).digest() for n in rng.sample(range(days * per_day), count)]


def new_digests(count: int, rng: random.Random) -> list[bytes]:
    return [hashlib.sha256(f"new {rng.random()}".encode()).digest() for _ in range(count)]


def measure(cursor, days: int, args: argparse.Namespace, rng: random.Random) -> dict[str, float]:
    cursor.execute(BENCH_QUERIES["reset"])
    cursor.execute(BENCH_QUERIES["make_by_day_table"])
    cursor.execute(BENCH_QUERIES["make_by_day_partitions"], {"first_day": FIRST_DAY, "days": days})
    first = datetime.combine(FIRST_DAY, time(0), tzinfo=timezone.utc)
    cursor.execute(BENCH_QUERIES["fill_days"], {"first_day": first, "days": days, "per_day": args.per_day})
    cursor.execute(BENCH_QUERIES["vacuum_processed_bodies"])
    cursor.execute(BENCH_QUERIES["vacuum_bodies_by_day"])
    queries = {"by day (before)": BENCH_QUERIES["first_tickets_by_day"],
               "one table (shipped)": SERVICE_QUERIES["first_tickets_with_bodies"]}
    results = {}
    for kind, digests in (("new", lambda: new_digests(args.batch, rng)),
                          ("known", lambda: known_digests(days, args.per_day, args.batch, rng))):
        for name, query in queries.items():
            server_ms(cursor, query, {"digests": digests()})  # caches warm, plan cached
            times = [server_ms(cursor, query, {"digests": digests()}) for _ in range(args.repeats)]
            results[f"{name}, {kind} digests"] = statistics.median(times)
    cursor.execute(BENCH_QUERIES["forget_day"], {"day": first})
    results["forget one purged day"] = server_ms(cursor, SERVICE_QUERIES["forget_purged_digests"], {})
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, nargs="+", default=[1, 30, 90])
    parser.add_argument("--per-day", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=480, help="digests a batch looks up")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    rng = random.Random(7)
    table: dict[str, dict[int, float]] = {}
    with scratch_database("myticket-digests-") as url:
        conn = psycopg2.connect(url)
        conn.autocommit = True
        try:
            with conn.cursor() as cursor:
                for days in args.days:
                    print(f"{days} days of {args.per_day} digests", file=sys.stderr)
                    for row, ms in measure(cursor, days, args, rng).items():
                        table.setdefault(row, {})[days] = ms
        finally:
            conn.close()
    print(f"\nduplicate look-up of {args.batch} digests, server ms (planning + execution), "
          f"median of {args.repeats}; {args.per_day} digests a day\n")
    print("| statement | " + " | ".join(f"{days} days" for days in args.days) + " |")
    print("| --- |" + " ---: |" * len(args.days))
    for row, by_days in table.items():
        print(f"| {row} | " + " | ".join(f"{by_days[days]:.2f}" for days in args.days) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
