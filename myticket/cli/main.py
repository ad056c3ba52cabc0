"""The `myticket` command: parse the arguments, load the settings, run the subcommand.

Whatever stops a command ends in one place, `error_line`: one line on stderr, after
`myticket: `, and the exit code (2 for a configuration error, as for argparse's own
usage errors; 1 otherwise). An error it does not know is a bug, and keeps its traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

from ..config import ConfigError, load_settings
from ..core.database_errors import DatabaseUnavailable
from ..db.embedded import EmbeddedPostgresError
from ..db.migrate import MigrationLockTimeout
from ..db.resources import ResourcesMissing
from ..intake.spool_ownership import ForeignSpool
from ..telemetry.logs import configure_logging
from ..web.server import ListenError
from .arguments import ArgumentProblem, build_parser
from .commands import CommandError
from .send import SendError


def _squeezed(exc: BaseException) -> str:
    return " ".join(str(exc).split())


# Each error a command may end with: what follows `myticket: `, and the exit code.
ERROR_LINES: tuple[tuple[type[Exception], Callable[[Exception], str], int], ...] = (
    (ConfigError, lambda exc: f"configuration error: {exc}", 2),
    (ArgumentProblem, str, 1),
    (CommandError, str, 1),
    (ListenError, str, 1),
    (ForeignSpool, str, 1),
    (SendError, lambda exc: f"send: {exc}", 1),
    (EmbeddedPostgresError, lambda exc: f"embedded PostgreSQL: {exc}", 1),
    (DatabaseUnavailable, lambda exc: f"database unavailable: {_squeezed(exc)}", 1),
    (MigrationLockTimeout, lambda exc: f"migrations not applied: {exc}", 1),
    (ResourcesMissing, lambda exc: f"broken installation: {exc}", 1),
)


def error_line(exc: Exception) -> tuple[str, int] | None:
    """The line to print for `exc` and the exit code, or None for an error no command
    is expected to end with."""
    for kind, words, exit_code in ERROR_LINES:
        if isinstance(exc, kind):
            return f"myticket: {words(exc)}", exit_code
    return None


def main(argv: Sequence[str] | None = None) -> int:
    try:
        options = vars(build_parser().parse_args(argv))
        del options["command"]
        run = options.pop("func")
        settings = load_settings(os.environ)
        configure_logging(settings.log_level, settings.log_format)
        return run(settings, **options)
    except Exception as exc:
        failure = error_line(exc)
        if failure is None:
            raise
        line, exit_code = failure
        print(line, file=sys.stderr)
        return exit_code


if __name__ == "__main__":
    sys.exit(main())
