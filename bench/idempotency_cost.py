"""What an Idempotency-Key costs the intake: `python bench/idempotency_cost.py`.

One service (`myticket serve --no-worker`, so only intake runs) on a scratch embedded
PostgreSQL, and, interleaved and repeated, four loads of POST /ticket:
  - hey, the reference ticket, no key;
  - hey, the reference ticket, one fixed key: after the first, every request is a replay
    (one look-up, nothing stored);
  - distinct tickets, no key (a small asyncio client);
  - distinct tickets, a distinct key each: one look-up, the store, one insert of the key.
Figures are requests per second (medians); compare them as ratios within one run, as the
machine is shared. Never part of `make test`.
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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.loadgen import _read_response, make_tickets  # noqa: E402
from bench.run import wait_ready  # noqa: E402
from myticket.db.embedded import EmbeddedPostgres  # noqa: E402
from myticket.db.migrate import apply_migrations  # noqa: E402

TICKET = ROOT / "bench" / "ticket.txt"


def hey(port: int, requests: int, concurrency: int, key: str | None) -> float:
    """hey's Requests/sec for one load; every answer must be a 202."""
    header = ["-H", f"Idempotency-Key: {key}"] if key else []
    out = subprocess.run(
        ["hey", "-n", str(requests), "-c", str(concurrency), "-m", "POST", "-D", str(TICKET), *header,
         f"http://127.0.0.1:{port}/ticket"],
        capture_output=True, text=True, check=True,
    ).stdout
    codes = re.findall(r"\[(\d{3})\]\s+(\d+) responses", out)
    assert [code for code, _ in codes] == ["202"], codes
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


async def distinct(port: int, bodies: list[bytes], concurrency: int, keyed: str | None) -> float:
    """Requests per second sending each body once, with a distinct key each when `keyed`
    (the keys' prefix, distinct per load)."""
    indexes = iter(range(len(bodies)))
    statuses: dict[int, int] = {}

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for index in indexes:
            body = bodies[index]
            key = f"Idempotency-Key: {keyed}-{index}\r\n" if keyed else ""
            writer.write(
                f"POST /ticket HTTP/1.1\r\nHost: bench\r\nContent-Type: text/plain\r\n{key}"
                f"Content-Length: {len(body)}\r\n\r\n".encode() + body
            )
            status, _ = await _read_response(reader)
            statuses[status] = statuses.get(status, 0) + 1
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    assert list(statuses) == [202], statuses
    return len(bodies) / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--port", type=int, default=9198)
    args = parser.parse_args()
    if shutil.which("hey") is None:
        print("idempotency_cost: hey is missing; install it with: apt-get install -y hey", file=sys.stderr)
        return 1
    workdir = Path(tempfile.mkdtemp(prefix="myticket-idempotency-"))
    server = EmbeddedPostgres(workdir / "pgdata")
    database_url = server.start()
    apply_migrations(database_url)
    env = {**os.environ, "DATABASE_URL": database_url, "HTTP_PORT": str(args.port), "LOG_LEVEL": "WARNING",
           "MYTICKET_DATA_DIR": str(workdir / "data")}
    service = subprocess.Popen([sys.executable, "-m", "myticket", "serve", "--no-worker"], cwd=ROOT, env=env)
    results: dict[str, list[float]] = {name: [] for name in (
        "hey, no key", "hey, one fixed key (replays)", "distinct tickets, no key", "distinct tickets, a key each")}
    try:
        wait_ready(f"http://127.0.0.1:{args.port}")
        hey(args.port, 200, 10, None)  # warm up
        for repeat in range(args.repeats):
            bodies = make_tickets(args.requests, seed=repeat)
            results["hey, no key"].append(hey(args.port, args.requests, args.concurrency, None))
            results["hey, one fixed key (replays)"].append(
                hey(args.port, args.requests, args.concurrency, f"replay-{repeat}"))
            results["distinct tickets, no key"].append(
                asyncio.run(distinct(args.port, bodies, args.concurrency, None)))
            keyed_bodies = [body + b"\n" for body in bodies]  # not the same bytes as the unkeyed load
            results["distinct tickets, a key each"].append(
                asyncio.run(distinct(args.port, keyed_bodies, args.concurrency, f"k{repeat}")))
    finally:
        service.terminate()
        service.wait(timeout=60)
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    base = {"hey": statistics.median(results["hey, no key"]),
            "distinct": statistics.median(results["distinct tickets, no key"])}
    print(f"{'load':36} {'req/s (median)':>15} {'ratio to no key':>16}   runs")
    for name, values in results.items():
        median = statistics.median(values)
        ratio = median / (base["hey"] if name.startswith("hey") else base["distinct"])
        print(f"{name:36} {median:15.0f} {ratio:16.2f}   {', '.join(f'{v:.0f}' for v in values)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
