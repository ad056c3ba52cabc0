"""`make bench-pair`: CPU per distinct ticket of two checkouts, in alternating rounds.

The machine is shared and noisy, so a figure from one run says little and one taken
an hour later says nothing. This runs the same load against two checkouts ("before"
and "after", each its own tree with its own .venv) one after the other, round after
round (before, after, before, after…), and compares their medians as ratios.

Each side of a round gets a fresh embedded PostgreSQL (fsync and synchronous_commit on)
migrated by its own tree, and its own tree's `myticket serve` (worker included) run by
its own venv's interpreter. The load is bench/loadgen.py's distinct tickets, the same
bodies for both sides of a round, sent by `--clients` keep-alive clients; a round lasts
until the worker has processed every ticket. Measured per acknowledged (2xx) ticket:
the CPU of the service's process tree (the worker process included) and of
PostgreSQL's, in µs; and acknowledged/s and processed/s. With `--statements N`,
pg_stat_statements is loaded and the N statements with the most execution time per
ticket are listed for each side (medians over the rounds).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.loadgen import make_tickets, send_tickets  # noqa: E402
from bench.run import QUERIES, CpuMeter, Database, wait_ready  # noqa: E402
from myticket.db.embedded import EmbeddedPostgres  # noqa: E402

MIGRATE = "import sys; from myticket.db.migrate import apply_migrations; apply_migrations(sys.argv[1])"
# The figures compared, with how each is printed.
FIGURES = {
    "service_us": "service CPU µs/ticket",
    "postgres_us": "PostgreSQL CPU µs/ticket",
    "total_us": "service + PostgreSQL CPU µs/ticket",
    "acked_per_s": "acked/s",
    "processed_per_s": "processed/s",
}


def side_python(tree: Path) -> str:
    python = tree / ".venv" / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"pair: {python} is missing; run `make install` in {tree}")
    return str(python)


def start_database(workdir: Path, statements: bool) -> tuple[EmbeddedPostgres, str]:
    server = EmbeddedPostgres(workdir / "pgdata")
    url = server.start()
    if statements:
        connection = psycopg2.connect(url)
        connection.autocommit = True
        with connection.cursor() as cur:
            cur.execute(QUERIES["preload_statement_statistics"])
        connection.close()
        server.stop()
        url = server.start()
    return server, url


def run_side(tree: Path, args: argparse.Namespace, seed: int) -> dict:
    """One side of a round: a fresh database and service from `tree`, the load, its figures."""
    python = side_python(tree)
    with tempfile.TemporaryDirectory(prefix="myticket-pair-") as scratch:
        workdir = Path(scratch)
        server, url = start_database(workdir, args.statements > 0)
        service = None
        try:
            subprocess.run([python, "-c", MIGRATE, url], cwd=tree, check=True)
            env = {
                **{name: value for name, value in os.environ.items() if not name.startswith("MYTICKET_")},
                "DATABASE_URL": url, "HTTP_PORT": str(args.port), "LOG_LEVEL": "WARNING",
                "MYTICKET_DATA_DIR": str(workdir / "data"),
            }
            service = subprocess.Popen([python, "-m", "myticket", "serve"], cwd=tree, env=env)
            wait_ready(f"http://127.0.0.1:{args.port}")
            db = Database(url)
            if args.statements:
                with db.conn.cursor() as cur:
                    cur.execute(QUERIES["enable_statement_statistics"])
            # A small warm-up: connections opened, day partitions made, code paths loaded.
            asyncio.run(send_tickets("127.0.0.1", args.port, make_tickets(500, seed=10_000 + seed),
                                     concurrency=min(args.clients, 50)))
            db.wait_for_empty_backlog(600)
            if args.statements:
                db.value("reset_statement_statistics")
            postmaster = int((workdir / "pgdata" / "postmaster.pid").read_text().split()[0])
            meter = CpuMeter({"service": [service.pid], "postgres": [postmaster]})
            bodies = make_tickets(args.tickets, seed=seed)
            stored_before = db.value("count_tickets")
            cpu_before = meter.read()
            started = time.monotonic()
            sent = asyncio.run(send_tickets("127.0.0.1", args.port, bodies, concurrency=args.clients))
            acked_at = time.monotonic()
            drained_at = db.wait_for_empty_backlog(900)
            ok = sum(count for code, count in sent.statuses.items() if 200 <= code < 300)
            cpu = meter.per_request(cpu_before, ok)
            stored = db.value("count_tickets") - stored_before
            statements = db.rows("statement_statistics") if args.statements else []
            db.conn.close()
        finally:
            if service is not None:
                service.terminate()
                service.wait(timeout=60)
            server.stop()
    return {
        **cpu,
        "total_us": cpu["service_us"] + cpu["postgres_us"],
        "acked_per_s": ok / (acked_at - started),
        "processed_per_s": ok / (drained_at - started),
        "ok": ok,
        "failed": sum(sent.statuses.values()) - ok + sent.connection_errors,
        "stored": stored,
        "statements": {query: exec_ms * 1000 / max(ok, 1) for query, _calls, exec_ms, *_ in statements},
    }


def _short(query: str) -> str:
    text = " ".join(line for line in query.splitlines() if not line.strip().startswith("--"))
    return " ".join(text.split())[:90]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, default=Path("/work/wt/base"), help="the checkout measured first")
    parser.add_argument("--after", type=Path, default=ROOT, help="the checkout compared with it (this one)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tickets", type=int, default=20_000, help="distinct tickets per side and round")
    parser.add_argument("--clients", type=int, default=100, help="keep-alive clients of the load")
    parser.add_argument("--port", type=int, default=9198)
    parser.add_argument("--statements", type=int, default=0,
                        help="list this many statements by execution time per ticket (loads pg_stat_statements)")
    args = parser.parse_args()
    sides = {"before": args.before.resolve(), "after": args.after.resolve()}
    for tree in sides.values():
        side_python(tree)
    results: dict[str, list[dict]] = {name: [] for name in sides}
    for round_number in range(args.rounds):
        for name, tree in sides.items():
            print(f"round {round_number + 1}/{args.rounds}: {name} ({tree})", file=sys.stderr)
            result = run_side(tree, args, seed=round_number + 1)
            print(f"  service {result['service_us']:.0f} µs, PostgreSQL {result['postgres_us']:.0f} µs per ticket, "
                  f"{result['acked_per_s']:.0f} acked/s, {result['processed_per_s']:.0f} processed/s",
                  file=sys.stderr)
            results[name].append(result)

    def median(name: str, key: str) -> float:
        return statistics.median(result[key] for result in results[name])

    print(f"\nmyticket bench-pair: {args.tickets} distinct tickets from {args.clients} clients until processed, "
          f"{args.rounds} alternating rounds, medians; {os.cpu_count()} cores\n"
          f"before: {sides['before']}\nafter:  {sides['after']}\n")
    print("| figure | before | after | after / before |\n| --- | ---: | ---: | ---: |")
    for key, label in FIGURES.items():
        before, after = median("before", key), median("after", key)
        print(f"| {label} | {before:.0f} | {after:.0f} | {after / before:.2f} |")
    problems = [f"{name} round {index + 1}: {result['failed']} failed, {result['stored']} stored of {result['ok']} 2xx"
                for name, rounds in results.items() for index, result in enumerate(rounds)
                if result["failed"] or result["stored"] != result["ok"]]
    if args.statements:
        queries = {query for rounds in results.values() for result in rounds for query in result["statements"]}

        def statement_median(name: str, query: str) -> float:
            return statistics.median(result["statements"].get(query, 0.0) for result in results[name])

        print(f"\nPostgreSQL execution µs per ticket, by statement (top {args.statements} of either side)\n")
        print("| statement | before | after |\n| --- | ---: | ---: |")
        ranked = sorted(queries, key=lambda q: -max(statement_median("before", q), statement_median("after", q)))
        for query in ranked[:args.statements]:
            print(f"| {_short(query)} | {statement_median('before', query):.1f} | {statement_median('after', query):.1f} |")
    if problems:
        print("\n" + "\n".join(problems), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
