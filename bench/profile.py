"""`make profile`: where POST /ticket spends its CPU under hey, from py-spy samples.

Starts PostgreSQL and `myticket serve` as bench/run.py does, records the service and its
worker process with py-spy while `hey -n 20000 -c 50` posts the reference ticket, and
prints the share of samples per process and per area (HTTP machinery, our handler, group
commit, the worker, metrics) and the hottest functions. "Where the time goes" in
docs/explanation/performance.md comes from this script.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import TICKET, Database, hey, wait_ready  # noqa: E402
from myticket.db.embedded import EmbeddedPostgres  # noqa: E402
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
    args = parser.parse_args()
    for tool in ("hey", "py-spy"):
        if shutil.which(tool) is None and not (Path(sys.executable).parent / tool).exists():
            print(f"profile: {tool} is missing (hey: apt-get install -y hey; py-spy: pip install '.[bench]')",
                  file=sys.stderr)
            return 1
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")

    workdir = Path(tempfile.mkdtemp(prefix="myticket-profile-"))
    server = EmbeddedPostgres(workdir / "pgdata")
    database_url = server.start()
    apply_migrations(database_url)
    env = {**os.environ, "DATABASE_URL": database_url, "HTTP_PORT": str(args.port), "LOG_LEVEL": "WARNING",
           "MYTICKET_DATA_DIR": str(workdir / "data")}
    service = subprocess.Popen([sys.executable, "-m", "myticket", "serve"], cwd=ROOT, env=env)
    samples = workdir / "samples.txt"
    try:
        wait_ready(f"http://127.0.0.1:{args.port}")
        recorder = subprocess.Popen(
            [py_spy, "record", "--subprocesses", "--format", "raw", "--rate", "200", "--output", str(samples),
             "--pid", str(service.pid)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        result = hey(f"http://127.0.0.1:{args.port}/ticket", "-n", str(args.requests), "-c", "50",
                     "-m", "POST", "-D", str(TICKET))
        Database(database_url).wait_for_empty_backlog(600)
        recorder.send_signal(2)
        recorder.wait(timeout=60)
    finally:
        service.terminate()
        service.wait(timeout=30)
        server.stop()

    processes: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    functions: Counter[str] = Counter()
    total = 0
    for line in samples.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if frames[-1].startswith(IDLE_LEAVES):
            continue
        total += int(count)
        # With --subprocesses the outer frames name the process, then its child if any.
        process = [frame for frame in frames[:2] if frame.startswith("process ")][-1]
        processes["worker process" if "spawn_main" in process else "HTTP process"] += int(count)
        areas[area_of(list(reversed(frames)))] += int(count)
        functions[frames[-1]] += int(count)
    shutil.rmtree(workdir, ignore_errors=True)

    print(f"POST /ticket, hey -n {args.requests} -c 50: {result['rps']:.0f} req/s; {total} busy samples of the service\n")
    print("| process | share of samples |\n| --- | ---: |")
    for name, count in processes.most_common():
        print(f"| {name} | {count / total:.0%} |")
    print("\n| area | share of samples |\n| --- | ---: |")
    for name, count in areas.most_common():
        print(f"| {name} | {count / total:.0%} |")
    print("\nhottest functions (self time):")
    for name, count in functions.most_common(12):
        print(f"  {count / total:5.1%}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
