"""`make bench`: start PostgreSQL and the service, load them, print one table.

Everything runs on this machine: an embedded PostgreSQL with its default durability
(fsync and synchronous_commit on), the service as `myticket serve`, and the load from
hey and from bench/loadgen.py. Figures are medians of --repeats runs; compare them as
ratios within one run, as the machine is shared and noisy. Never part of `make test`.

The CPU columns are the CPU time the service's processes (worker included) and
PostgreSQL's used during a load, divided by its 2xx answers; for distinct tickets the
load lasts until the worker has processed them all. They show where the two cores go.

Each repeat ends with a burst: `--burst` distinct tickets from `--burst-clients` clients
all started at once from idle, with the p99 of the requests sent in its first second and
the seconds until all are acknowledged and until the backlog is drained.

The distinct-ticket row also gives: req/s there is tickets acknowledged (2xx) per second
of sending, processed/s the same tickets over the time from the first send until the
backlog is drained, and their ratio; the on-disk bytes of all the service's tables
(heap, TOAST, indexes, found from the catalogue) per stored ticket once drained, in
total and per table family (daily partitions count under their table); and the dead
tuples, updates and vacuums of the raw-ticket tables (tickets, or deliveries and its
partitions). Sizes and stored tickets are cumulative over the repeats and include the
hey loads' tickets, as the database is kept. The statistics come from pg_stat_user_tables, which the service's backends
flush at most once a second and, once idle, within PostgreSQL's 10 s idle interval:
they are read before and after the load until they have not moved for 11 s (30 s at
most; "unsettled" says the limit was hit), and reported as read.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psycopg2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.loadgen import make_tickets, send_tickets  # noqa: E402
from myticket.db.embedded import EmbeddedPostgres  # noqa: E402
from myticket.db.migrate import apply_migrations  # noqa: E402
from myticket.db.resources import named_queries  # noqa: E402

QUERIES = named_queries(ROOT / "bench" / "sql")
TICKET = ROOT / "bench" / "ticket.txt"
# The hey loads of each repeat: the path they hit and hey's arguments.
SCENARIOS = {
    "seed: hey -m POST -D bench/ticket.txt": ("/ticket", ("-m", "POST", "-D", str(TICKET))),
    "POST /ticket -n 20000 -c 50": ("/ticket", ("-n", "20000", "-c", "50", "-m", "POST", "-D", str(TICKET))),
    "POST /ticket -n 20000 -c 200": ("/ticket", ("-n", "20000", "-c", "200", "-m", "POST", "-D", str(TICKET))),
    "GET /ping -n 20000 -c 50": ("/ping", ("-n", "20000", "-c", "50")),
}
# The calibration rows against the bare aiohttp app: their label, and the load they repeat.
BASELINE_SCENARIOS = {
    "GET /ping -n 20000 -c 50": "GET /ping -n 20000 -c 50",
    "POST, body read, nothing stored -n 20000 -c 50": "POST /ticket -n 20000 -c 50",
}


def hey(url: str, *args: str) -> dict:
    output = subprocess.run(["hey", *args, url], capture_output=True, text=True, check=True).stdout
    statuses = {int(code): int(count) for code, count in re.findall(r"\[(\d{3})\]\s+(\d+) responses", output)}
    error_block = output.split("Error distribution:", 1)[1] if "Error distribution:" in output else ""
    errors = sum(int(n) for n in re.findall(r"\[(\d+)\]", error_block))
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output)[1]),
        "p50": float(re.search(r"50% in ([\d.]+) secs", output)[1]),
        "p99": float(re.search(r"99% in ([\d.]+) secs", output)[1]),
        "ok": sum(count for code, count in statuses.items() if 200 <= code < 300),
        "non2xx": sum(count for code, count in statuses.items() if not 200 <= code < 300),
        "errors": errors,
    }


class Database:
    def __init__(self, url: str) -> None:
        self.conn = psycopg2.connect(url)
        self.conn.autocommit = True

    def value(self, name: str):
        with self.conn.cursor() as cur:
            cur.execute(QUERIES[name])
            return cur.fetchone()[0]

    def rows(self, name: str) -> list[tuple]:
        with self.conn.cursor() as cur:
            cur.execute(QUERIES[name])
            return cur.fetchall()

    def record(self, name: str) -> dict:
        """The one row of a query, by column name."""
        with self.conn.cursor() as cur:
            cur.execute(QUERIES[name])
            return dict(zip((column.name for column in cur.description), cur.fetchone()))

    def settled_record(self, name: str, quiet: float = 11.0, limit: float = 30.0) -> dict:
        """A statistics query read until it has not changed for `quiet` seconds.

        Other backends flush their counters at most once a second, and an idle one within
        PostgreSQL's idle interval (PGSTAT_IDLE_INTERVAL, 10 s); pg_stat_force_next_flush()
        would only flush this session's, which writes nothing. Each read is a transaction of
        its own (autocommit), so it sees a fresh statistics snapshot. After `limit`
        seconds the last read is returned with "settled": False.
        """
        started = time.monotonic()
        last, changed_at = self.record(name), started
        while time.monotonic() - changed_at < quiet:
            if time.monotonic() - started > limit:
                return {**last, "settled": False}
            time.sleep(0.5)
            current = self.record(name)
            if current != last:
                last, changed_at = current, time.monotonic()
        return {**last, "settled": True}

    def wait_for_empty_backlog(self, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while self.value("any_pending"):
            if time.monotonic() > deadline:
                raise SystemExit("the backlog did not drain in time")
            time.sleep(0.1)
        return time.monotonic()


def peak_rss_mib(pid: int) -> float:
    """Peak resident memory (VmHWM) of a process and its children, in MiB."""
    total = 0
    for candidate in _process_tree(pid):
        try:
            status = Path(f"/proc/{candidate}/status").read_text()
        except FileNotFoundError:
            continue
        total += int(re.search(r"VmHWM:\s+(\d+) kB", status)[1])
    return total / 1024


def _process_tree(pid: int) -> list[int]:
    """`pid` and every process below it; one that exits meanwhile is left out."""
    found = [pid]
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
        children = [int(child) for task in tasks for child in (task / "children").read_text().split()]
    except FileNotFoundError:
        return found
    for child in children:
        found.extend(_process_tree(child))
    return found


def _cpu_seconds(pid: int) -> float:
    """User and system CPU of a process, plus that of its children it has reaped."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds used by named process trees (the service, PostgreSQL) so far."""

    def __init__(self, roots: dict[str, list[int]]) -> None:
        self.roots = roots

    def read(self) -> dict[str, float]:
        totals = {}
        for name, pids in self.roots.items():
            totals[name] = sum(_cpu_seconds(tree_pid) for pid in pids for tree_pid in _process_tree(pid))
        return totals

    def per_request(self, before: dict[str, float], count: int) -> dict[str, float]:
        after = self.read()
        return {f"{name}_us": (after[name] - before[name]) * 1e6 / max(count, 1) for name in after}


def wait_ready(base: str, timeout: float = 60, path: str = "/ready") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base}{path}", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("the service did not become ready")


def run_hey_scenario(db: Database, meter: CpuMeter, url: str, *args: str) -> dict:
    db.wait_for_empty_backlog(600)
    before = db.value("count_tickets")
    cpu_before = meter.read()
    result = hey(url, *args)
    result.update(meter.per_request(cpu_before, result["ok"]))
    result["stored"] = db.value("count_tickets") - before
    return result


def run_distinct(db: Database, meter: CpuMeter, port: int, count: int, seed: int, concurrency: int) -> dict:
    """Send distinct tickets and wait until all are processed; CPU counts intake and processing."""
    db.wait_for_empty_backlog(600)
    bodies = make_tickets(count, seed=seed)
    raw_before = db.settled_record("raw_ticket_table_stats")
    before = db.value("count_tickets")
    cpu_before = meter.read()
    started = time.monotonic()
    sent = asyncio.run(send_tickets("127.0.0.1", port, bodies, concurrency=concurrency))
    acked_at = time.monotonic()
    drained_at = db.wait_for_empty_backlog(900)
    ok = sum(count for code, count in sent.statuses.items() if 200 <= code < 300)
    cpu = meter.per_request(cpu_before, ok)
    stored_total = db.value("count_tickets")
    sizes = dict(db.rows("table_sizes"))
    raw_after = db.settled_record("raw_ticket_table_stats")
    return {
        "rps": ok / (acked_at - started),
        "processed_per_s": ok / (drained_at - started),
        "processed_per_acked": (acked_at - started) / (drained_at - started),
        "bytes_per_stored": sum(sizes.values()) / max(stored_total, 1),
        "family_bytes_per_stored": {family: size / max(stored_total, 1) for family, size in sizes.items()},
        "raw_dead": raw_after["dead"],
        "raw_updated": raw_after["updated"] - raw_before["updated"],
        "raw_hot_updated": raw_after["hot_updated"] - raw_before["hot_updated"],
        "raw_vacuums": raw_after["vacuums"] - raw_before["vacuums"],
        "raw_settled": raw_before["settled"] and raw_after["settled"],
        "p50": sent.percentile(0.5),
        "p99": sent.percentile(0.99),
        "ok": ok,
        "non2xx": sum(sent.statuses.values()) - ok,
        "errors": sent.connection_errors,
        "stored": stored_total - before,
        **cpu,
    }


def run_burst(db: Database, port: int, count: int, clients: int, seed: int) -> dict:
    """`count` distinct tickets from `clients` clients all started at once, from idle (an
    empty backlog): the p99 of the requests sent in the first second, and the seconds
    until every ticket is acknowledged and until the backlog is drained."""
    db.wait_for_empty_backlog(600)
    bodies = make_tickets(count, seed=seed)
    stored_before = db.value("count_tickets")
    started, started_perf = time.monotonic(), time.perf_counter()
    sent = asyncio.run(send_tickets("127.0.0.1", port, bodies, concurrency=clients))
    acked_at = time.monotonic()
    drained_at = db.wait_for_empty_backlog(900)
    first_second = sorted(latency for latency, sent_at in zip(sent.latencies, sent.sent_at)
                          if sent_at - started_perf < 1.0)
    ok = sum(count for code, count in sent.statuses.items() if 200 <= code < 300)
    return {
        "first_second_requests": len(first_second),
        "first_second_p99": first_second[min(len(first_second) - 1, int(0.99 * len(first_second)))]
        if first_second else float("nan"),
        "p99": sent.percentile(0.99),
        "acked_in": acked_at - started,
        "drained_in": drained_at - started,
        "ok": ok,
        "failed": sum(sent.statuses.values()) - ok + sent.connection_errors,
        "stored": db.value("count_tickets") - stored_before,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--distinct", type=int, default=100_000, help="distinct tickets per repeat")
    parser.add_argument("--processes", type=int, default=1, help="HTTP_PROCESSES of the service")
    parser.add_argument("--port", type=int, default=9098)
    parser.add_argument("--concurrency", type=int, default=200, help="clients of the distinct-ticket load")
    parser.add_argument("--burst", type=int, default=20_000, help="distinct tickets of each repeat's burst")
    parser.add_argument("--burst-clients", type=int, default=500, help="clients of the burst, all started at once")
    parser.add_argument("--serve-args", default="", help="extra arguments for myticket serve")
    parser.add_argument("--worker-process", action="store_true", help="also start `myticket worker` (with --serve-args=--no-worker)")
    parser.add_argument(
        "--uvloop", action="store_true",
        help="run the HTTP process on uvloop, for measurement only: with aiopg it does not reconnect after a "
             "PostgreSQL outage (aiopg issue #909)",
    )
    args = parser.parse_args()
    if shutil.which("hey") is None:
        print("bench: hey is missing; install it with: apt-get install -y hey", file=sys.stderr)
        return 1

    workdir = Path(tempfile.mkdtemp(prefix="myticket-bench-"))
    server = EmbeddedPostgres(workdir / "pgdata")
    database_url = server.start()
    apply_migrations(database_url)
    env = {
        **os.environ, "DATABASE_URL": database_url, "HTTP_PORT": str(args.port), "LOG_LEVEL": "WARNING",
        "HTTP_PROCESSES": str(args.processes), "MYTICKET_DATA_DIR": str(workdir / "data"),
    }
    launcher = (
        ["-c", "import sys, uvloop; uvloop.install(); from myticket.cli import main; sys.exit(main(sys.argv[1:]))"]
        if args.uvloop else ["-m", "myticket"]
    )
    service = subprocess.Popen([sys.executable, *launcher, "serve", *args.serve_args.split()], cwd=ROOT, env=env)
    baseline_port = args.port + 1
    baseline = subprocess.Popen([sys.executable, str(ROOT / "bench" / "baseline_app.py"), str(baseline_port)])
    worker = subprocess.Popen([sys.executable, "-m", "myticket", "worker"], cwd=ROOT, env=env) if args.worker_process else None
    base = f"http://127.0.0.1:{args.port}"
    rows: dict[str, list[dict]] = {}
    baseline_rows: dict[str, list[dict]] = {}
    bursts: list[dict] = []
    try:
        wait_ready(base)
        wait_ready(f"http://127.0.0.1:{baseline_port}", path="/ping")
        db = Database(database_url)
        postmaster = int((workdir / "pgdata" / "postmaster.pid").read_text().split()[0])
        meter = CpuMeter({"service": [service.pid, *([worker.pid] if worker else [])], "postgres": [postmaster]})
        for repeat in range(args.repeats):
            print(f"repeat {repeat + 1}/{args.repeats}", file=sys.stderr)
            for name, (path, hey_args) in SCENARIOS.items():
                rows.setdefault(name, []).append(run_hey_scenario(db, meter, f"{base}{path}", *hey_args))
            for label, name in BASELINE_SCENARIOS.items():
                path, hey_args = SCENARIOS[name]
                baseline_rows.setdefault(label, []).append(hey(f"http://127.0.0.1:{baseline_port}{path}", *hey_args))
            name = f"distinct tickets x{args.distinct} -c {args.concurrency}"
            rows.setdefault(name, []).append(
                run_distinct(db, meter, args.port, args.distinct, seed=repeat + 1, concurrency=args.concurrency)
            )
            bursts.append(run_burst(db, args.port, args.burst, args.burst_clients, seed=1000 + repeat))
        rss = peak_rss_mib(service.pid)
    finally:
        for process in (service, worker, baseline):
            if process is not None:
                process.terminate()
                process.wait(timeout=30)
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    ping = statistics.median(result["rps"] for result in rows["GET /ping -n 20000 -c 50"])
    variant = " ".join(filter(None, [args.serve_args, "+ myticket worker" if args.worker_process else "", "uvloop" if args.uvloop else ""]))
    print(f"\nmyticket bench: {args.repeats} repeats, medians; {args.processes} HTTP process(es) {variant}; "
          f"{os.cpu_count()} cores; peak RSS of the service {rss:.0f} MiB\n")
    print("| scenario | req/s | x /ping | p50 ms | p99 ms | non-2xx | errors | 2xx | rows stored | processed/s "
          "| processed/acked | service CPU µs/2xx | PostgreSQL CPU µs/2xx | bytes/stored ticket "
          "| bytes/stored ticket by table | raw-ticket tables: dead tuples after | updates (HOT) | vacuums |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
          "| --- | ---: | ---: | ---: |")
    for name, results in rows.items():
        def median(key: str) -> float:
            return statistics.median(result[key] for result in results)

        distinct = ["", "", "", "", "", "", ""]
        if "processed_per_s" in results[0]:
            families = sorted({family for result in results for family in result["family_bytes_per_stored"]})
            by_family = {
                family: statistics.median(result["family_bytes_per_stored"].get(family, 0) for result in results)
                for family in families
            }
            unsettled = "" if all(result["raw_settled"] for result in results) else " (unsettled)"
            distinct = [
                f"{median('processed_per_s'):.0f}",
                f"{median('processed_per_acked'):.2f}",
                f"{median('bytes_per_stored'):.0f}",
                ", ".join(f"{family} {size:.0f}" for family, size in sorted(by_family.items(), key=lambda item: -item[1])),
                f"{median('raw_dead'):.0f}{unsettled}",
                f"{median('raw_updated'):.0f} ({median('raw_hot_updated'):.0f})",
                f"{median('raw_vacuums'):.0f}",
            ]
        stored_ok = all(result["stored"] == result["ok"] for result in results) or "ping" in name
        print(
            f"| {name} | {median('rps'):.0f} | {median('rps') / ping:.2f} | {median('p50') * 1000:.1f} "
            f"| {median('p99') * 1000:.1f} | {median('non2xx'):.0f} | {median('errors'):.0f} | {median('ok'):.0f} "
            f"| {median('stored'):.0f}{'' if stored_ok else ' (MISMATCH)'} | {distinct[0]} | {distinct[1]} "
            f"| {median('service_us'):.0f} | {median('postgres_us'):.0f} | {' | '.join(distinct[2:])} |"
        )
    baseline_ping = statistics.median(result["rps"] for result in baseline_rows["GET /ping -n 20000 -c 50"])
    print("\nCalibration, same run: bench/baseline_app.py, a bare aiohttp app that stores nothing\n")
    print("| bare aiohttp | req/s | x its /ping | p50 ms | p99 ms |\n| --- | ---: | ---: | ---: | ---: |")
    for name, results in baseline_rows.items():
        rps = statistics.median(result["rps"] for result in results)
        print(f"| {name} | {rps:.0f} | {rps / baseline_ping:.2f} "
              f"| {statistics.median(result['p50'] for result in results) * 1000:.1f} "
              f"| {statistics.median(result['p99'] for result in results) * 1000:.1f} |")
    print(f"\nBurst: {args.burst} distinct tickets from {args.burst_clients} clients all started at once, "
          f"from idle; medians\n")
    print("| requests sent in the first second | their p99 ms | p99 of the burst ms | all acknowledged after s "
          "| backlog drained after s | 2xx | failed | rows stored |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")

    def burst_median(key: str) -> float:
        return statistics.median(burst[key] for burst in bursts)

    bursts_stored_ok = all(burst["stored"] == burst["ok"] for burst in bursts)
    print(f"| {burst_median('first_second_requests'):.0f} | {burst_median('first_second_p99') * 1000:.1f} "
          f"| {burst_median('p99') * 1000:.1f} | {burst_median('acked_in'):.1f} | {burst_median('drained_in'):.1f} "
          f"| {burst_median('ok'):.0f} | {burst_median('failed'):.0f} "
          f"| {burst_median('stored'):.0f}{'' if bursts_stored_ok else ' (MISMATCH)'} |")
    mismatches = [name for name, results in rows.items()
                  if "ping" not in name and any(result["stored"] != result["ok"] for result in results)]
    if not bursts_stored_ok:
        mismatches.append("burst")
    if mismatches:
        print(f"\nrows stored differ from 2xx answered in: {', '.join(mismatches)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
