"""The embedded server's watchdog, in a process out of file descriptors (EMFILE), must
not take a server it cannot look at for a dead one, nor start another on its data."""

from __future__ import annotations

import os
import resource

import pytest

from myticket.db.embedded import EmbeddedPostgres


def postmaster_pid(server: EmbeddedPostgres) -> str:
    return (server.pgdata / "postmaster.pid").read_text().split()[0]


def test_out_of_file_descriptors_the_watchdog_neither_restarts_nor_buries_a_running_server(tmp_path_factory):
    server = EmbeddedPostgres(tmp_path_factory.mktemp("watchdog") / "pgdata")
    server.start()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    fillers: list[int] = []
    try:
        before = postmaster_pid(server)
        assert server.watch_once() is True
        # A real EMFILE: a soft limit just above the descriptors open now, then filled.
        highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
        resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 8, hard))
        with pytest.raises(OSError):
            for _ in range(highest + 8):
                fillers.append(os.open(os.devnull, os.O_RDONLY))

        seen = server.watch_once()

        for fd in fillers:
            os.close(fd)
        fillers.clear()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        assert seen is None, "out of descriptors, the watchdog must say it cannot tell"
        assert server.is_running()
        assert postmaster_pid(server) == before, "the running server was restarted"
    finally:
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        server.stop()
