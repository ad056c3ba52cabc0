"""A bounded property-based run of schemathesis against a real `myticket serve`: from the
served /openapi.json it generates requests for every operation, valid and invalid,
and finds no 5xx and no answer outside the document (status, content type, headers,
body schema)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from ..service_process import Service

# Small enough for `make test` (well under a minute), large enough to try each
# operation's parameters, bodies and headers in several shapes.
MAX_EXAMPLES = 30
SEED = 20


async def test_schemathesis_finds_no_server_error_and_no_answer_outside_the_document(database_url: str, tmp_path: Path):
    service = Service(database_url, tmp_path / "data")
    await service.start()
    try:
        command = [
            str(Path(sys.executable).parent / "schemathesis"), "run", f"{service.base}/openapi.json",
            "--checks", "all", "--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED),
            # stateful: follows the document's links (POST /ticket's id to GET /tickets/{id}).
            "--phases", "examples,coverage,fuzzing,stateful", "--request-timeout", "10", "--max-time", "40",
            "--no-color",
        ]
        environment = {name: value for name, value in os.environ.items() if not name.startswith("SCHEMATHESIS_")}
        run = await asyncio.to_thread(
            subprocess.run, command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=240,
        )
    finally:
        service.stop()
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    summary = run.stdout[run.stdout.rindex("Test cases:"):]
    assert " passed" in summary and "fail" not in summary, run.stdout[-3000:]
