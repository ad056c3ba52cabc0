"""The service as a real process (`python -m myticket serve`), for the tests that
need signals, restarts and several processes: one place that starts and watches it."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp

from .environment import child_environment
from .paths import PROJECT_ROOT
from .waiting import wait_until


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Service:
    """`python -m myticket serve` in a subprocess, restartable on the same data directory."""

    def __init__(
        self,
        database_url: str | None,
        data_dir: Path,
        *,
        log_name: str = "service.log",
        serve_args: tuple[str, ...] = (),
        python: str = sys.executable,
        cwd: Path = PROJECT_ROOT,
        **extra_env: str,
    ) -> None:
        """`database_url` None: as under `make run`, the embedded PostgreSQL in `data_dir`,
        on a free port of its own (never the one a developer's `make run` uses, even when
        the shell exports it). `python` and `cwd`: another installation of myticket (a
        wheel in its own venv), run from outside the checkout. `extra_env`: the test's
        own settings, over these."""
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        chosen = {"HTTP_PORT": str(self.port), "HTTP_HOST": "127.0.0.1", "MYTICKET_DATA_DIR": str(data_dir),
                  "LOG_LEVEL": "WARNING"}
        if database_url is not None:
            chosen["DATABASE_URL"] = database_url
        else:
            chosen["MYTICKET_EMBEDDED_PORT"] = str(free_port())
        self.env = child_environment(**{**chosen, **extra_env})
        self.embedded = database_url is None
        self.serve_args = serve_args
        self.data_dir = data_dir
        self.log = data_dir / log_name
        data_dir.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen | None = None
        self.python = python
        self.cwd = cwd

    def command(self, *args: str) -> list[str]:
        """A `myticket` command line, to run with `self.env`."""
        return [self.python, "-m", "myticket", *args]

    def run(self, *args: str, timeout: float = 120, **extra_env: str) -> subprocess.CompletedProcess:
        """Another `myticket` command against the same configuration, to its end."""
        return subprocess.run(
            self.command(*args), cwd=self.cwd, env={**self.env, **extra_env},
            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        )

    async def start(self) -> None:
        if self.process is not None:
            await asyncio.to_thread(self.process.wait)  # reap the previous, killed or stopped
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.command("serve", *self.serve_args), cwd=self.cwd, env=self.env,
                stdout=log, stderr=subprocess.STDOUT,
            )
        await wait_until(self.ready, timeout=60, what="the service to answer /ready")

    async def ready_state(self) -> dict | None:
        try:
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{self.base}/ready", timeout=aiohttp.ClientTimeout(total=5)) as response:
                    return await response.json() if response.status == 200 else None
        except aiohttp.ClientError:
            return None

    async def ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"service exited with {self.process.returncode}: {self.log.read_text()[-2000:]}")
        return await self.ready_state() is not None

    async def spool_drained(self) -> bool:
        state = await self.ready_state()
        return state is not None and state["status"] == "ready" and state["spool"]["tickets"] == 0

    def signal(self, signal_number: int) -> None:
        assert self.process is not None
        self.process.send_signal(signal_number)

    def stop(self, *, embedded_server_too: bool = True) -> None:
        """Kill the service; in embedded mode also stop the PostgreSQL a kill leaves behind."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self.embedded and embedded_server_too:
            from myticket.db.embedded import EmbeddedPostgres

            server = EmbeddedPostgres(self.data_dir / "pgdata")
            if server.is_running():
                server.stop()
