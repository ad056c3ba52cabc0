"""`make bench-scale`: the distinct-ticket load on an empty database, then on one holding
months of service, side by side, in one session.

Why: every other bench measures an empty database, and the cost per ticket grows with the
days kept (the duplicate look-up reads every kept day's digests, statements that cannot
prune plan over every partition).

One embedded PostgreSQL with pg_stat_statements preloaded, one `myticket serve`:

1. empty: `--distinct` tickets from `--concurrency` clients of bench/loadgen.py until the
   backlog is drained, then a burst (`--burst` tickets, `--burst-clients` clients all
   started at once, from idle);
2. fill: `--filled-days` past days of `--tickets-per-day` tickets each, with set-based SQL
   (bench/sql/scale.sql: each day's partitions, then deliveries, outcomes, lines, digests
   and catalogue in one statement per day, oldest first), then VACUUM ANALYZE and a
   CHECKPOINT, as months of service with autovacuum would have left them;
3. filled: the same load and burst (other tickets of the same kind).

While each distinct load runs, `--reads-per-second` paced reads of each route measure the
read path: GET /tickets/{id} (of tickets acked so far when empty, of the filled days'
tickets when filled), and each GET /tickets filter over 24 hours and over every filled day. CPU is
that of the service's process tree and of PostgreSQL's, per acknowledged ticket, over the
time until the backlog is drained. pg_stat_statements (planning tracked too) is reset
before each distinct load and read after it: the statements whose time per ticket grows
are printed, largest growth first. The machine is shared: compare the two columns of one
run, not runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import psycopg2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.loadgen import SendResult, make_tickets, send_tickets  # noqa: E402
from bench.run import QUERIES, CpuMeter, Database, peak_rss_mib, run_burst, wait_ready  # noqa: E402
from myticket.db.embedded import EmbeddedPostgres  # noqa: E402
from myticket.db.migrate import apply_migrations  # noqa: E402
from myticket.db.resources import load_queries  # noqa: E402



def ticket_list_filters(first_day: date) -> list[tuple[str, str]]:
    """The GET /tickets searches read beside the load, (label, path): each filter over its
    default window (the last 24 hours, today's load) and over every filled day since
    `first_day`. The same paths in both runs; on the empty database the long windows hold
    only today's partitions with tickets."""
    since = f"since={first_day.isoformat()}"
    order_ref = f"fill-{first_day + timedelta(days=1)}-1234"  # a filled ticket's, second day
    return [
        ("GET /tickets (24 h)", "/tickets"),
        ("GET /tickets?status=rejected (24 h)", "/tickets?status=rejected"),
        ("GET /tickets?status=rejected (all days)", f"/tickets?status=rejected&{since}"),
        ("GET /tickets?order_ref= (all days)", f"/tickets?order_ref={order_ref}&{since}"),
        ("GET /tickets?product_id= (24 h)", "/tickets?product_id=P00042"),
        ("GET /tickets?product_id= (all days)", f"/tickets?product_id=P00042&{since}"),
    ]


@dataclass
class Reads:
    """Latencies and statuses of the reads made while a load ran, by route label."""

    latencies: dict[str, list[float]] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)

    def percentile(self, label: str, fraction: float) -> float:
        ordered = sorted(self.latencies.get(label, []))
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


async def _get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str) -> int:
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return int(head.split(b" ", 2)[1])


async def read_while(done: asyncio.Event, port: int, rate: float, ids: list[str] | SendResult,
                     searches: list[tuple[str, str]], reads: Reads) -> None:
    """Paced reads (`rate` a second per route, one connection each) until `done`: GET
    /tickets/{id} of a random id (from a list, or from what a running load has acked so
    far), and each GET /tickets search."""
    routes = [("GET /tickets/{id}", None), *searches] if rate > 0 else []  # 0: no reads

    async def reader_of(label: str, fixed_path: str | None) -> None:
        connection = None
        rng = random.Random(label)
        while not done.is_set():
            await asyncio.sleep(1 / rate)
            pool = list(ids.acked.values()) if isinstance(ids, SendResult) else ids
            if fixed_path is None and not pool:
                continue
            path = fixed_path or f"/tickets/{rng.choice(pool)}"
            try:
                if connection is None:
                    connection = await asyncio.open_connection("127.0.0.1", port)
                started = time.perf_counter()
                status = await _get(*connection, path)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                reads.failures[label] = reads.failures.get(label, 0) + 1
                connection = None
                continue
            if status == 200:
                reads.latencies.setdefault(label, []).append(time.perf_counter() - started)
            else:
                reads.failures[label] = reads.failures.get(label, 0) + 1
        if connection is not None:
            connection[1].close()

    await asyncio.gather(*(reader_of(label, path) for label, path in routes))


async def load_with_reads(port: int, bodies: list[bytes], concurrency: int, rate: float,
                          read_ids: list[str] | None, searches: list[tuple[str, str]]) -> tuple[SendResult, Reads]:
    sent, reads, done = SendResult(), Reads(), asyncio.Event()
    reading = asyncio.create_task(
        read_while(done, port, rate, read_ids if read_ids is not None else sent, searches, reads)
    )
    await send_tickets("127.0.0.1", port, bodies, concurrency=concurrency, result=sent)
    done.set()
    await reading
    return sent, reads


def run_distinct(db: Database, meter: CpuMeter, args: argparse.Namespace, seed: int,
                 read_ids: list[str] | None) -> dict:
    """The distinct load until drained, with reads beside it; CPU covers intake and processing."""
    db.wait_for_empty_backlog(600)
    bodies = make_tickets(args.distinct, seed=seed)
    stored_before = db.value("count_tickets")
    db.value("reset_statement_statistics")
    cpu_before = meter.read()
    started = time.monotonic()
    searches = ticket_list_filters(first_filled_day(args))
    sent, reads = asyncio.run(
        load_with_reads(args.port, bodies, args.concurrency, args.reads_per_second, read_ids, searches)
    )
    acked_at = time.monotonic()
    drained_at = db.wait_for_empty_backlog(900)
    ok = sum(count for code, count in sent.statuses.items() if 200 <= code < 300)
    return {
        "acked_per_s": ok / (acked_at - started),
        "processed_per_s": ok / (drained_at - started),
        "p50": sent.percentile(0.5),
        "p99": sent.percentile(0.99),
        "ok": ok,
        "failed": sum(sent.statuses.values()) - ok + sent.connection_errors,
        "stored": db.value("count_tickets") - stored_before,
        "reads": reads,
        "statements": db.rows("statement_statistics"),
        **meter.per_request(cpu_before, ok),
    }


def first_filled_day(args: argparse.Namespace) -> date:
    return datetime.now(timezone.utc).date() - timedelta(days=args.filled_days)


def fill(db: Database, args: argparse.Namespace) -> dict:
    """`--filled-days` past days, oldest first, then VACUUM ANALYZE; the time of each step."""
    today = datetime.now(timezone.utc).date()
    days = [today - timedelta(days=back) for back in range(args.filled_days, 0, -1)]
    totals = {"deliveries": 0, "outcomes": 0, "lines": 0, "digests": 0}
    started = time.monotonic()
    with db.conn.cursor() as cur:
        for number, day in enumerate(days, start=1):
            cur.execute(QUERIES["create_past_day_partitions"], {"day": day})
            cur.execute(QUERIES["fill_day"], {"day": day, "per_day": args.tickets_per_day, "products": args.products})
            row = dict(zip((column.name for column in cur.description), cur.fetchone()))
            for key in totals:
                totals[key] += row[key]
            if number % 10 == 0 or number == len(days):
                print(f"filled {number}/{len(days)} days in {time.monotonic() - started:.0f} s", file=sys.stderr)
        filled_at = time.monotonic()
        cur.execute(QUERIES["vacuum_analyze"])
        cur.execute(QUERIES["checkpoint"])
    vacuumed_at = time.monotonic()
    return {
        **totals, "days": len(days), "first_day": first_filled_day(args),
        "products": db.value("count_products"), "fill_s": filled_at - started, "vacuum_s": vacuumed_at - filled_at,
        "database_bytes": db.value("database_bytes"),
    }


def _normalised(text: str) -> str:
    """A statement's text with comments, parameters and literals made alike, so that a
    named query matches its pg_stat_statements entry (which has $n for each constant)."""
    text = re.sub(r"--[^\n]*|/\*.*?\*/", " ", text, flags=re.DOTALL)
    # psycopg2 sends a list as ARRAY[...], which PostgreSQL 18 keeps as ARRAY[$1 /*, ... */]
    text = re.sub(r"ARRAY\[[^\]]*\]", "?", text, flags=re.IGNORECASE)
    text = re.sub(r"%\(\w+\)s|\$\d+|'(?:[^']|'')*'|\b\d+\b|\bNULL\b(?=\s*::)", "?", text, flags=re.IGNORECASE)
    # and a datetime as '...'::timestamptz, so a cast written after it comes twice
    text = re.sub(r"(::[\w\[\]]+)(?:\1)+", r"\1", text)
    return " ".join(text.lower().split()).rstrip("; ")


def statement_names() -> dict[str, str]:
    """Normalised text -> name, for the service's named queries and the bench's own."""
    names = {_normalised(text): name for name, text in load_queries().items()}
    names.update({_normalised(text): f"bench: {name}" for name, text in QUERIES.items()})
    return names


def statement_growth(empty: dict, filled: dict, limit: int) -> list[tuple]:
    """Per named statement: calls, then execution µs, planning µs and shared blocks per
    acked ticket, empty and filled; largest growth of time per ticket first, leaving out
    those under 0.1 µs in both."""
    names = statement_names()

    def per_ticket(result: dict) -> dict[str, tuple[float, ...]]:
        totals: dict[str, list[float]] = {}
        for query, calls, exec_ms, plan_ms, blocks, _rows in result["statements"]:
            name = names.get(_normalised(query), " ".join(query.split())[:60])
            if name.startswith("bench: ") or "pg_stat_statements" in query:
                continue
            entry = totals.setdefault(name, [0, 0.0, 0.0, 0.0])
            entry[0] += calls
            entry[1] += exec_ms * 1000
            entry[2] += plan_ms * 1000
            entry[3] += blocks
        ok = max(result["ok"], 1)
        return {name: (calls, exec_us / ok, plan_us / ok, blocks / ok)
                for name, (calls, exec_us, plan_us, blocks) in totals.items()}

    before, after = per_ticket(empty), per_ticket(filled)
    rows = []
    for name in set(before) | set(after):
        calls_0, exec_0, plan_0, blocks_0 = before.get(name, (0, 0.0, 0.0, 0.0))
        calls_1, exec_1, plan_1, blocks_1 = after.get(name, (0, 0.0, 0.0, 0.0))
        rows.append((name, int(calls_0), int(calls_1), exec_0, exec_1, plan_0, plan_1,
                     (exec_1 + plan_1) - (exec_0 + plan_0), blocks_0, blocks_1))
    rows = [row for row in rows if max(row[3] + row[5], row[4] + row[6]) >= 0.1]
    rows.sort(key=lambda row: row[7], reverse=True)
    return rows[:limit]


# The statements of the read routes, whose cost per call (not per ticket) is reported.
READ_STATEMENTS = ("ticket_by_id", "lines_of_ticket", "tickets_page", "tickets_page_by_order_ref",
                   "tickets_page_by_product", "tickets_page_walked", "tickets_page_by_order_ref_walked",
                   "tickets_page_by_product_walked")


def read_statement_costs(result: dict) -> dict[str, tuple[int, float, float]]:
    """Per read statement: calls, and mean planning and execution ms per call. PostgreSQL's
    own time, apart from the service's queueing, which the reads' latencies include."""
    names = statement_names()
    totals: dict[str, list[float]] = {}
    for query, calls, exec_ms, plan_ms, _blocks, _rows in result["statements"]:
        name = names.get(_normalised(query))
        if name in READ_STATEMENTS:
            entry = totals.setdefault(name, [0, 0.0, 0.0])
            entry[0] += calls
            entry[1] += plan_ms
            entry[2] += exec_ms
    return {name: (int(calls), plan / max(calls, 1), execution / max(calls, 1))
            for name, (calls, plan, execution) in totals.items()}


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def report(args: argparse.Namespace, empty: dict, filled: dict, bursts: dict, filling: dict, rss: float) -> None:
    print(f"\nmyticket bench at scale: {args.distinct} distinct tickets from {args.concurrency} clients, "
          f"on an empty database, then on {filling['days']} filled days; {os.cpu_count()} cores; "
          f"peak RSS of the service {rss:.0f} MiB\n")
    print(f"fill: {filling['days']} days x {args.tickets_per_day} tickets from {filling['first_day']}: "
          f"{filling['deliveries']} deliveries, {filling['lines']} lines, {filling['digests']} digests, "
          f"{filling['products']} products; {filling['fill_s']:.0f} s "
          f"({filling['fill_s'] / max(filling['days'], 1):.1f} s a day), then VACUUM ANALYZE {filling['vacuum_s']:.0f} s; "
          f"database {filling['database_bytes'] / 2**30:.2f} GiB\n")
    rows = [
        ("acknowledged/s", lambda r: f"{r['acked_per_s']:.0f}"),
        ("processed/s", lambda r: f"{r['processed_per_s']:.0f}"),
        ("service CPU µs per ticket", lambda r: f"{r['service_us']:.0f}"),
        ("PostgreSQL CPU µs per ticket", lambda r: f"{r['postgres_us']:.0f}"),
        ("POST /ticket p50 ms", lambda r: _ms(r["p50"])),
        ("POST /ticket p99 ms", lambda r: _ms(r["p99"])),
        ("2xx / failed / rows stored", lambda r: f"{r['ok']} / {r['failed']} / {r['stored']}"
         + ("" if r["stored"] == r["ok"] else " (MISMATCH)")),
    ]
    for label, _path in (("GET /tickets/{id}", None), *ticket_list_filters(filling["first_day"])):
        rows.append((f"{label} p50 / p99 ms (reads, failed)",
                     lambda r, label=label: f"{_ms(r['reads'].percentile(label, 0.5))} / "
                                            f"{_ms(r['reads'].percentile(label, 0.99))} "
                                            f"({len(r['reads'].latencies.get(label, []))}, "
                                            f"{r['reads'].failures.get(label, 0)})"))
    print(f"| distinct load | empty | {filling['days']} days filled | filled / empty |")
    print("| --- | ---: | ---: | ---: |")
    for label, cell in rows:
        ratio = ""
        key = {"acknowledged/s": "acked_per_s", "processed/s": "processed_per_s",
               "service CPU µs per ticket": "service_us", "PostgreSQL CPU µs per ticket": "postgres_us",
               "POST /ticket p99 ms": "p99"}.get(label)
        if key:
            ratio = f"{filled[key] / empty[key]:.2f}" if empty[key] else ""
        print(f"| {label} | {cell(empty)} | {cell(filled)} | {ratio} |")
    print(f"\n| burst: {args.burst} tickets, {args.burst_clients} clients at once, from idle | empty "
          f"| {filling['days']} days filled |")
    print("| --- | ---: | ---: |")
    for label, cell in (
        ("requests sent in the first second", lambda b: f"{b['first_second_requests']}"),
        ("p99 of the first second, ms", lambda b: _ms(b["first_second_p99"])),
        ("p99 of the whole burst, ms", lambda b: _ms(b["p99"])),
        ("all acknowledged after, s", lambda b: f"{b['acked_in']:.1f}"),
        ("backlog drained after, s", lambda b: f"{b['drained_in']:.1f}"),
        ("2xx / failed / rows stored", lambda b: f"{b['ok']} / {b['failed']} / {b['stored']}"
         + ("" if b["stored"] == b["ok"] else " (MISMATCH)")),
    ):
        print(f"| {label} | {cell(bursts['empty'])} | {cell(bursts['filled'])} |")
    print("\nread statements over each distinct load (pg_stat_statements): calls, mean planning / execution ms "
          "per call\n")
    print("| statement | empty | filled |")
    print("| --- | ---: | ---: |")
    costs = (read_statement_costs(empty), read_statement_costs(filled))
    for name in READ_STATEMENTS:
        cells = [f"{cost[name][0]}, {cost[name][1]:.2f} / {cost[name][2]:.2f}" if name in cost else "-"
                 for cost in costs]
        if any(cell != "-" for cell in cells):
            print(f"| {name} | {cells[0]} | {cells[1]} |")
    print("\npg_stat_statements over each distinct load, per acknowledged ticket: execution and planning µs, "
          "shared blocks; largest growth (execution + planning) first\n")
    print("| statement | calls empty | calls filled | execution µs empty | filled | planning µs empty | filled "
          "| growth µs | shared blocks empty | filled |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, calls_0, calls_1, exec_0, exec_1, plan_0, plan_1, growth, blocks_0, blocks_1 in statement_growth(
        empty, filled, args.statements
    ):
        print(f"| {name} | {calls_0} | {calls_1} | {exec_0:.1f} | {exec_1:.1f} | {plan_0:.1f} | {plan_1:.1f} "
              f"| {growth:+.1f} | {blocks_0:.1f} | {blocks_1:.1f} |")


def start_database(workdir: Path) -> tuple[EmbeddedPostgres, str]:
    """An embedded PostgreSQL with pg_stat_statements preloaded (a restart applies it)."""
    server = EmbeddedPostgres(workdir / "pgdata")
    url = server.start()
    connection = psycopg2.connect(url)
    connection.autocommit = True
    with connection.cursor() as cur:
        cur.execute(QUERIES["preload_statement_statistics"])
        cur.execute(QUERIES["track_planning"])
    connection.close()
    server.stop()
    url = server.start()
    apply_migrations(url)
    return server, url


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--filled-days", type=int, default=90, help="past days to fill before the second load")
    parser.add_argument("--tickets-per-day", type=int, default=20_000)
    parser.add_argument("--products", type=int, default=12_000, help="products the filled days draw from")
    parser.add_argument("--distinct", type=int, default=50_000, help="distinct tickets of each load")
    parser.add_argument("--concurrency", type=int, default=200, help="clients of the distinct load")
    parser.add_argument("--burst", type=int, default=20_000, help="tickets of each burst")
    parser.add_argument("--burst-clients", type=int, default=500, help="clients of a burst, all started at once")
    parser.add_argument("--reads-per-second", type=float, default=5.0,  # 0: no reads
                        help="paced reads of each read route beside the distinct load")
    parser.add_argument("--read-sample", type=int, default=2000, help="filled tickets the reads pick from")
    parser.add_argument("--statements", type=int, default=15, help="statements listed")
    parser.add_argument("--port", type=int, default=9098)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="myticket-bench-scale-"))
    server, database_url = start_database(workdir)
    env = {
        **{name: value for name, value in os.environ.items() if name != "MYTICKET_RETENTION_DAYS"},
        "DATABASE_URL": database_url, "HTTP_PORT": str(args.port), "LOG_LEVEL": "WARNING",
        "MYTICKET_DATA_DIR": str(workdir / "data"),
    }
    service = subprocess.Popen([sys.executable, "-m", "myticket", "serve"], cwd=ROOT, env=env)
    try:
        wait_ready(f"http://127.0.0.1:{args.port}")
        db = Database(database_url)
        with db.conn.cursor() as cur:
            cur.execute(QUERIES["enable_statement_statistics"])
        postmaster = int((workdir / "pgdata" / "postmaster.pid").read_text().split()[0])
        meter = CpuMeter({"service": [service.pid], "postgres": [postmaster]})
        print("empty database: distinct load", file=sys.stderr)
        empty = run_distinct(db, meter, args, seed=101, read_ids=None)
        print("empty database: burst", file=sys.stderr)
        bursts = {"empty": run_burst(db, args.port, args.burst, args.burst_clients, seed=102)}
        filling = fill(db, args)
        today = datetime.now(timezone.utc).date()
        with db.conn.cursor() as cur:
            cur.execute(QUERIES["filled_ticket_sample"], {
                "before": datetime.combine(today, datetime.min.time(), tzinfo=timezone.utc), "count": args.read_sample,
            })
            sample = [row[0] for row in cur.fetchall()]
        print("filled database: distinct load", file=sys.stderr)
        filled = run_distinct(db, meter, args, seed=103, read_ids=sample or None)
        print("filled database: burst", file=sys.stderr)
        bursts["filled"] = run_burst(db, args.port, args.burst, args.burst_clients, seed=104)
        rss = peak_rss_mib(service.pid)
    finally:
        service.terminate()
        service.wait(timeout=30)
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    report(args, empty, filled, bursts, filling, rss)
    mismatched = [result for result in (empty, filled, *bursts.values()) if result["stored"] != result["ok"]]
    if mismatched:
        print("\nrows stored differ from 2xx answered", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
