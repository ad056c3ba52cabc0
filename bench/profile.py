"""`make profile`: where POST /ticket spends its CPU under hey, from py-spy samples.

Starts PostgreSQL and `myticket serve` as bench/run.py does, records the service and its
worker process with py-spy while `hey -n 20000 -c 50` posts the reference ticket, and
prints the share of samples per process and per area (HTTP machinery, our handler, group
commit, the worker, metrics) and the hottest functions. "Where the time goes" in
docs/explanation/performance.md comes from this script.

With `--distinct N` the load is N distinct tickets of bench/loadgen.py from `--clients`
clients instead (every ticket parsed and written by the worker, not only the first),
and PostgreSQL's side is listed too: pg_stat_statements' execution time per ticket of
each statement, from a server started with the library preloaded.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.loadgen import make_tickets, send_tickets  # noqa: E402
from bench.run import QUERIES, TICKET, Database, hey, wait_ready  # noqa: E402
from bench.pair import start_database  # noqa: E402
from myticket.db.migrate import apply_migrations  # noqa: E402

# First match wins, from the innermost frame outwards.
AREAS = (
    ("worker (parse, claim, write outcomes)", ("myticket/worker/", "myticket/core/parser.py", "myticket/core/processing.py")),
    ("metrics", ("myticket/telemetry/metrics.py", "aioprometheus")),
    ("group commit and INSERT (aiopg, psycopg2)", ("myticket/intake/", "myticket/db/", "aiopg")),
    ("our handler and middleware", ("myticket/web/",)),
    ("aiohttp HTTP parsing and responses", ("aiohttp",)),
    ("asyncio event loop", ("asyncio", "selectors")),
)


# Leaf frames that are waits, not work: the event loop's poll, the idle spool thread,
# multiprocessing's resource tracker reading its pipe.
IDLE_LEAVES = ("EpollSelector.select", "_worker (concurrent/futures/thread.py", "main (multiprocessing/resource_tracker.py")


def area_of(frames: list[str]) -> str:
    for name, markers in AREAS:
        if any(marker in frame for frame in frames for marker in markers):
            return name
    return "other"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=9098)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--distinct", type=int, default=0, help="distinct tickets instead of hey's repeated body")
    parser.add_argument("--clients", type=int, default=100, help="clients of the distinct load")
    parser.add_argument("--tree", type=Path, default=ROOT,
                        help="the checkout whose service is profiled, run by its own .venv (default: this one)")
    parser.add_argument("--samples", type=Path, help="also keep py-spy's raw samples in this file")
    parser.add_argument("--functions", type=int, default=12, help="hottest functions (and statements) listed")
    args = parser.parse_args()
    for tool in ("hey", "py-spy"):
        if shutil.which(tool) is None and not (Path(sys.executable).parent / tool).exists():
            print(f"profile: {tool} is missing (hey: apt-get install -y hey; py-spy: pip install '.[bench]')",
                  file=sys.stderr)
            return 1
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")

    workdir = Path(tempfile.mkdtemp(prefix="myticket-profile-"))
    server, database_url = start_database(workdir, statements=bool(args.distinct))
    apply_migrations(database_url)
    env = {**os.environ, "DATABASE_URL": database_url, "HTTP_PORT": str(args.port), "LOG_LEVEL": "WARNING",
           "MYTICKET_DATA_DIR": str(workdir / "data")}
    tree = args.tree.resolve()
    python = str(tree / ".venv" / "bin" / "python") if tree != ROOT else sys.executable
    service = subprocess.Popen([python, "-m", "myticket", "serve"], cwd=tree, env=env)
    samples = workdir / "samples.txt"
    statements: list[tuple] = []
    try:
        wait_ready(f"http://127.0.0.1:{args.port}")
        db = Database(database_url)
        if args.distinct:
            with db.conn.cursor() as cur:
                cur.execute(QUERIES["enable_statement_statistics"])
            db.value("reset_statement_statistics")
        recorder = subprocess.Popen(
            [py_spy, "record", "--subprocesses", "--format", "raw", "--rate", "200", "--output", str(samples),
             "--pid", str(service.pid)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        if args.distinct:
            sent = asyncio.run(send_tickets("127.0.0.1", args.port, make_tickets(args.distinct, seed=1),
                                            concurrency=args.clients))
            ok = sum(count for code, count in sent.statuses.items() if 200 <= code < 300)
            load = f"{args.distinct} distinct tickets, {args.clients} clients: {ok / sent.elapsed:.0f} acked/s"
        else:
            result = hey(f"http://127.0.0.1:{args.port}/ticket", "-n", str(args.requests), "-c", "50",
                         "-m", "POST", "-D", str(TICKET))
            load = f"POST /ticket, hey -n {args.requests} -c 50: {result['rps']:.0f} req/s"
        db.wait_for_empty_backlog(600)
        recorder.send_signal(2)
        recorder.wait(timeout=60)
        if args.distinct:
            statements = db.rows("statement_statistics")
        db.conn.close()
    finally:
        service.terminate()
        service.wait(timeout=30)
        server.stop()

    processes: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    functions: Counter[str] = Counter()
    # Samples under each of our functions (callees included), each counted once per sample.
    inclusive: Counter[str] = Counter()
    total = 0
    for line in samples.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if frames[-1].startswith(IDLE_LEAVES):
            continue
        total += int(count)
        # With --subprocesses the outer frames name the process, then its child if any.
        process = [frame for frame in frames[:2] if frame.startswith("process ")][-1]
        processes["worker process" if "spawn_main" in process or "myticket: worker" in process else "HTTP process"] += int(count)
        areas[area_of(list(reversed(frames)))] += int(count)
        functions[frames[-1]] += int(count)
        for frame in {frame for frame in frames if "myticket/" in frame}:
            inclusive[frame] += int(count)
    if args.samples is not None:
        shutil.copyfile(samples, args.samples)
    shutil.rmtree(workdir, ignore_errors=True)

    print(f"{load}; {total} busy samples of the service\n")
    print("| process | share of samples |\n| --- | ---: |")
    for name, count in processes.most_common():
        print(f"| {name} | {count / total:.0%} |")
    print("\n| area | share of samples |\n| --- | ---: |")
    for name, count in areas.most_common():
        print(f"| {name} | {count / total:.0%} |")
    print("\nhottest functions (self time):")
    for name, count in functions.most_common(args.functions):
        print(f"  {count / total:5.1%}  {name}")
    print("\nour functions, callees included:")
    for name, count in inclusive.most_common(args.functions):
        print(f"  {count / total:5.1%}  {name}")
    if statements:
        print("\nPostgreSQL execution µs per ticket, by statement (pg_stat_statements):")
        for query, calls, exec_ms, plan_ms, *_ in sorted(statements, key=lambda row: -row[2])[:args.functions]:
            text = " ".join(" ".join(line for line in query.splitlines() if not line.strip().startswith("--")).split())
            print(f"  {exec_ms * 1000 / args.distinct:7.1f}  {calls:6d} calls  {text[:100]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
