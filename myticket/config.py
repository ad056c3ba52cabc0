"""Settings read once from the environment at start.

Nothing here runs at import time: `load_settings(os.environ)` is called by the CLI,
and tests build `Settings` directly. A bad value raises `ConfigError` whose message
is one line naming the variable, which the CLI prints before exiting.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from .core.senders import Network, parse_networks

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

# Every variable the service reads; the README documents each (a test checks it).
ENVIRONMENT_VARIABLES = (
    "DATABASE_URL",
    "HTTP_HOST",
    "HTTP_PORT",
    "MYTICKET_MAX_BODY_BYTES",
    "MYTICKET_DATA_DIR",
    "LOG_LEVEL",
    "MYTICKET_BATCH_MAX_SIZE",
    "MYTICKET_MAX_WAITING_TICKETS",
    "MYTICKET_FLUSHES_IN_FLIGHT",
    "HTTP_PROCESSES",
    "MYTICKET_WORKER",
    "MYTICKET_WORKERS",
    "MYTICKET_SPOOL_DIR",
    "MYTICKET_SPOOL_MAX_BYTES",
    "MYTICKET_WEBHOOK_SECRET",
    "MYTICKET_WEBHOOK_SECRETS",
    "MYTICKET_API_TOKENS",
    "MYTICKET_READ_TIMEOUT_SECONDS",
    "MYTICKET_EMBEDDED_PORT",
    "MYTICKET_WORKER_BATCH_MAX_BYTES",
    "MYTICKET_MAX_PENDING_BYTES",
    "MYTICKET_BATCH_MAX_BYTES",
    "MYTICKET_WORKER_BATCH_SIZE",
    "MYTICKET_WORKER_MAX_ATTEMPTS",
    "MYTICKET_DATABASE_POOL_SIZE",
    "MYTICKET_SPOOL_REPLAY_BATCH",
    "MYTICKET_RETENTION_DAYS",
    "MYTICKET_ARCHIVE_DIR",
    "MYTICKET_MAINTENANCE_INTERVAL_SECONDS",
    "MYTICKET_LOG_FORMAT",
    "MYTICKET_ACCESS_LOG",
    "MYTICKET_READ_DATABASE_URL",
    "MYTICKET_TRUSTED_PROXIES",
    "MYTICKET_SENDER_SHARE_PERCENT",
    "MYTICKET_MAX_CONNECTIONS",
    "MYTICKET_MAX_CONNECTIONS_PER_SENDER",
    "MYTICKET_MIN_BODY_BYTES_PER_SECOND",
)
DEFAULT_SPOOL_MAX_BYTES = 1024 * 1024 * 1024
# Settings that multiply memory, bounded so that a typo cannot take the machine: each
# HTTP process holds about 57 MiB idle (64: 3.6 GiB, far past what 2 cores can use;
# `serve --processes 100000` kept starting processes), and each worker loop holds one
# claim of up to MYTICKET_WORKER_BATCH_MAX_BYTES (64 loops: 512 MiB by default).
MAX_HTTP_PROCESSES = 64
MAX_WORKER_LOOPS = 64
DEFAULT_WORKER_BATCH_MAX_BYTES = 8 * 1024 * 1024
# 500, not 200: with the day-partitioned tables each claim runs several statements whose
# planning and start cost is per batch, and a bigger batch merges more sightings of the
# same product. Draining 40,000 distinct tickets, PostgreSQL's CPU per ticket fell from
# 89-95 us to 78-80 us (the previous schema's did not move: 99-110 us either way).
DEFAULT_WORKER_BATCH_SIZE = 500
# Bodies held in memory at once (being read or waiting for a commit): 256 such 1 MiB
# bodies, far below a small machine's memory, where 20,000 waiting tickets of the
# body limit would be 20 GiB.
DEFAULT_MAX_PENDING_BYTES = 256 * 1024 * 1024
# Body bytes in one group-commit INSERT: 16 such 1 MiB tickets commit in well under a
# second, where 256 of them ran past the database timeout.
DEFAULT_BATCH_MAX_BYTES = 16 * 1024 * 1024
# The embedded PostgreSQL's fixed port: stable across restarts (psql, scripts and a
# second command find it where it was), and not 5432, where a system PostgreSQL listens.
DEFAULT_EMBEDDED_PORT = 5499
# How often the worker process makes the partitions of the next days and, with a
# retention, archives and purges the days past it: a day's work is found within an hour.
DEFAULT_MAINTENANCE_INTERVAL_SECONDS = 3600.0
# Longest maintenance interval: the partitions are made two days ahead, so a round a
# day still finds each day's partitions made before the day begins.
MAX_MAINTENANCE_INTERVAL_SECONDS = 86400
# Longest retention: a hundred years (a longer one is a typo, and dates stop at year 9999).
MAX_RETENTION_DAYS = 36500
# An Idempotency-Key is remembered at least a day (a sender's retries span hours), at
# most a year; its day partition is dropped once the whole day is past this.
DEFAULT_IDEMPOTENCY_KEY_HOURS = 24
MIN_IDEMPOTENCY_KEY_HOURS = 24
MAX_IDEMPOTENCY_KEY_HOURS = 24 * 366
# What one sender (see myticket.core.senders) may hold of the body bytes in memory and
# of the tickets waiting for a commit: a quarter, so that three greedy senders at once
# still leave room for everyone else.
DEFAULT_SENDER_SHARE_PERCENT = 25
# File descriptors kept out of the connection cap for everything else a process opens:
# the PostgreSQL pool (counted apart), the spool's SQLite files, the worker's pipes, the
# embedded server's pg_ctl pipes, log files and the listening sockets.
FILE_DESCRIPTOR_RESERVE = 64
# Open connections from one client address: a shop's registers behind one NAT address
# stay far below it, and 256 connections' request heads (at most 32 headers of 8 KB,
# see myticket.web.server) stay near 130 MB even under a header flood.
DEFAULT_MAX_CONNECTIONS_PER_SENDER = 256
# The slowest body accepted, after a grace of BODY_GRACE_SECONDS: a ticket trickled
# slower than this is answered 408 and its connection freed (Apache's MinRate idea).
DEFAULT_MIN_BODY_BYTES_PER_SECOND = 1000


class ConfigError(ValueError):
    """A configuration value is missing or malformed; the message names the variable."""


WORKER_PLACEMENTS = ("process", "inline")
# How log lines look (the first is the default); myticket.telemetry.logs formats them.
LOG_FORMATS = ("text", "json")


@dataclass(frozen=True)
class Settings:
    database_url: str | None = None
    # Where the read routes (GET /tickets/{id}, /products...) read: a standby, or a list
    # of hosts with target_session_attrs=prefer-standby. None: the database_url.
    read_database_url: str | None = field(default=None, repr=False)
    http_host: str = "0.0.0.0"
    http_port: int = 9098
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    data_dir: Path = Path(".myticket")
    log_level: str = "INFO"
    # Group commit: how many tickets one INSERT carries, and how many tickets may
    # wait for a commit before POST /ticket answers 503 (bounded memory).
    batch_max_size: int = 256
    max_waiting_tickets: int = 20_000
    # A batch's body bytes (it always takes at least one ticket), and the body bytes
    # all requests may hold at once before POST /ticket answers 503.
    batch_max_bytes: int = DEFAULT_BATCH_MAX_BYTES
    max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES
    # Batches being committed at once. One lets the most tickets gather per commit,
    # which halved PostgreSQL's CPU per ticket against two here; more can help when
    # the database is far away (round trips dominate) and has cores to spare.
    flushes_in_flight: int = 1
    http_processes: int = 1
    # Concurrent worker loops in a process that runs the worker: their database waits
    # overlap, which nearly doubled processing throughput on two cores.
    workers: int = 2
    # Body bytes one worker claim may load (at least one ticket, however large): with
    # 200 tickets of 1 MiB pending, a claim holds 8 MiB, not 200.
    worker_batch_max_bytes: int = DEFAULT_WORKER_BATCH_MAX_BYTES
    # Most tickets one worker claim locks (one transaction); its bodies are further
    # bounded by worker_batch_max_bytes.
    worker_batch_size: int = DEFAULT_WORKER_BATCH_SIZE
    # Attempts a ticket gets when its processing fails for another reason than its data
    # or the database being down (a deadlock, a bug), before it is rejected.
    worker_max_attempts: int = 3
    # Connections of a process's PostgreSQL pool (group commit, reads, the worker).
    database_pool_size: int = 10
    # Spooled tickets the replayer moves into PostgreSQL per statement.
    spool_replay_batch: int = 500
    # None: $MYTICKET_DATA_DIR/spool. A spool of at most 0 bytes means no spool.
    spool_dir: Path | None = None
    spool_max_bytes: int = DEFAULT_SPOOL_MAX_BYTES
    # When any is set, POST /ticket requires X-Signature: sha256=<HMAC-SHA256 of the
    # body> under one of them (several at once, so a secret can be rotated).
    webhook_secrets: tuple[str, ...] = field(default=(), repr=False)
    # Bearer tokens for the read routes (several at once, for rotation). None set: the
    # read routes answer loopback clients only.
    api_tokens: tuple[str, ...] = field(default=(), repr=False)
    # Bearer tokens for requeueing (POST /tickets/.../reprocess). None set: the read
    # routes' rule applies to requeueing too.
    admin_tokens: tuple[str, ...] = field(default=(), repr=False)
    # How long an Idempotency-Key (or webhook-id) is remembered, in hours (at least 24).
    idempotency_key_hours: int = DEFAULT_IDEMPOTENCY_KEY_HOURS
    # Longest wait for a request body (and for an idle keep-alive connection).
    read_timeout_seconds: float = 30.0
    # Whether `serve` also runs the ticket worker (`--no-worker` turns it off), and where:
    # "process", a child process of the HTTP process, so parsing runs beside the event
    # loop instead of inside it; or "inline", tasks in the HTTP process's event loop.
    run_worker: bool = True
    worker_placement: str = "process"
    # Port of the embedded PostgreSQL (used only when database_url is None).
    embedded_port: int = DEFAULT_EMBEDDED_PORT
    # Days of tickets kept besides today: older days are archived to archive_dir, then
    # their partitions dropped, by the worker process. None: kept forever.
    retention_days: int | None = None
    # Where retention writes its archives (None: no automatic archive).
    archive_dir: Path | None = None
    # Seconds between two maintenance rounds (partitions ahead, then retention).
    maintenance_interval_seconds: float = DEFAULT_MAINTENANCE_INTERVAL_SECONDS
    # "text" (a terminal) or "json" (one object per line, for a log pipeline).
    log_format: str = "text"
    # One INFO line per HTTP request on logger myticket.access (off: no cost per request).
    access_log: bool = False
    # Proxies whose X-Forwarded-For last hop names the sender (see myticket.core.senders);
    # empty: the sender is always the connection's address.
    trusted_proxies: tuple[Network, ...] = ()
    # Percent of the body bytes and of the waiting tickets one sender may hold.
    sender_share_percent: int = DEFAULT_SENDER_SHARE_PERCENT
    # Open connections of an HTTP process; None: from RLIMIT_NOFILE at start
    # (default_max_connections). Per sender: a cap within it.
    max_connections: int | None = None
    max_connections_per_sender: int = DEFAULT_MAX_CONNECTIONS_PER_SENDER
    # Slowest body accepted after the grace (0: only MYTICKET_READ_TIMEOUT_SECONDS applies).
    min_body_bytes_per_second: int = DEFAULT_MIN_BODY_BYTES_PER_SECOND

    @property
    def signing_secret(self) -> str | None:
        """The secret `myticket send` signs with: the first configured one."""
        return self.webhook_secrets[0] if self.webhook_secrets else None

    @property
    def pgdata_dir(self) -> Path:
        return self.data_dir / "pgdata"

    @property
    def spool_path(self) -> Path:
        return self.spool_dir if self.spool_dir is not None else self.data_dir / "spool"


def _raw(environ: Mapping[str, str], name: str) -> str | None:
    """The variable's value, or None when it is unset or blank."""
    raw = environ.get(name)
    return raw.strip() if raw is not None and raw.strip() else None


def _integer(environ: Mapping[str, str], name: str, default: int, *, minimum: int = 1, maximum: int | None = None) -> int:
    raw = _raw(environ, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}: must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name}: must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name}: must be at most {maximum}, got {value}")
    return value


def _choice(environ: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    """One of `choices`; the first is the default."""
    raw = _raw(environ, name)
    if raw is None:
        return choices[0]
    if raw.lower() not in choices:
        raise ConfigError(f"{name}: must be one of {', '.join(choices)}, got {raw!r}")
    return raw.lower()


MAX_TIMEOUT_SECONDS = 3600


def _switch(environ: Mapping[str, str], name: str) -> bool:
    """On (1, true, yes, on) or off (0, false, no, off, unset); anything else is an error."""
    raw = _raw(environ, name)
    if raw is None or raw.lower() in ("0", "false", "no", "off"):
        return False
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"{name}: must be 1 or 0 (true/false, yes/no, on/off), got {raw!r}")


def _positive_seconds(
    environ: Mapping[str, str], name: str, default: float, *, maximum: float = MAX_TIMEOUT_SECONDS
) -> float:
    raw = _raw(environ, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if math.isnan(value):
        raise ConfigError(f"{name}: must be a number of seconds, got {raw!r}")
    if value <= 0:
        raise ConfigError(f"{name}: must be greater than 0, got {raw}")
    if value > maximum:
        raise ConfigError(f"{name}: must be at most {maximum:g}, got {raw}")
    return value


def _comma_list(environ: Mapping[str, str], name: str) -> tuple[str, ...] | None:
    """The comma-separated values of a variable that is set, or None when it is unset.

    Set to nothing, or with an empty item, is an error rather than "none": a value
    lost in a deployment template must not quietly turn a check off.
    """
    raw = environ.get(name)
    if raw is None:
        return None
    values = tuple(value.strip() for value in raw.split(","))
    if not any(values):
        raise ConfigError(f"{name}: is set but empty; unset it, or give comma-separated values")
    if not all(values):
        raise ConfigError(f"{name}: has an empty value between commas, got {len(values)} items")
    return values


def _webhook_secrets(environ: Mapping[str, str]) -> tuple[str, ...]:
    """MYTICKET_WEBHOOK_SECRETS (comma-separated, for rotation) or MYTICKET_WEBHOOK_SECRET
    (one secret, taken whole: it may contain a comma); not both, so that which one
    `myticket send` signs with is never a guess. Secrets are never quoted back."""
    single = environ.get("MYTICKET_WEBHOOK_SECRET")
    several = _comma_list(environ, "MYTICKET_WEBHOOK_SECRETS")
    if single is not None and several is not None:
        raise ConfigError(
            "MYTICKET_WEBHOOK_SECRET: set together with MYTICKET_WEBHOOK_SECRETS; "
            "keep one (MYTICKET_WEBHOOK_SECRETS=new,old rotates)"
        )
    if single is None:
        return several or ()
    if not single.strip():
        raise ConfigError(
            "MYTICKET_WEBHOOK_SECRET: is set but empty; unset it to accept unsigned tickets, or give the secret"
        )
    return (single,)


# A bearer token is RFC 6750's b64token (what a header carries without quoting), long
# enough not to be guessed: `python -c 'import secrets; print(secrets.token_urlsafe(32))'`.
_B64TOKEN = re.compile(r"[A-Za-z0-9._~+/-]+=*")
MIN_API_TOKEN_LENGTH = 16


def _api_tokens(environ: Mapping[str, str], name: str = "MYTICKET_API_TOKENS") -> tuple[str, ...]:
    tokens = _comma_list(environ, name) or ()
    for position, token in enumerate(tokens, start=1):
        # Tokens are never quoted back; their position says which one is wrong.
        if not _B64TOKEN.fullmatch(token):
            raise ConfigError(
                f"{name}: token {position} has a character a bearer token cannot carry "
                "(allowed: letters, digits, - . _ ~ + / and trailing =)"
            )
        if len(token) < MIN_API_TOKEN_LENGTH:
            raise ConfigError(
                f"{name}: token {position} must be at least {MIN_API_TOKEN_LENGTH} characters, "
                f"got {len(token)}"
            )
    return tokens


def _connection_string(environ: Mapping[str, str], name: str) -> str | None:
    """A PostgreSQL connection string as libpq reads it: a URL (one host or several, as
    `h1:p1,h2:p2` or `?host=h1,h2&port=p1,p2`) or key/value (`host=h1,h2 port=... dbname=...`),
    checked by myticket.db.hosts (libpq's own parser); returned exactly as given."""
    raw = environ.get(name, "").strip()
    if not raw:
        return None
    # libpq's own parser, through psycopg2: imported only when a string is set, so that
    # reading the other settings needs no database driver.
    from .db.hosts import InvalidConnectionString, names_a_host, parse_targets

    # The string itself is never quoted back: it may hold a password.
    if "://" in raw or not _KEY_VALUE.match(raw):
        parts = urlsplit(raw)
        if parts.scheme not in ("postgresql", "postgres"):
            got = f"{parts.scheme}://" if parts.scheme else "no scheme"
            raise ConfigError(f"{name}: must start with postgresql:// or postgres://, got {got}")
    try:
        parse_targets(raw)
        names_host = names_a_host(raw)
    except InvalidConnectionString as exc:
        raise ConfigError(f"{name}: {exc}") from None
    if not names_host:
        raise ConfigError(f"{name}: must name a host, as in postgresql://user:password@host:port/dbname")
    return raw


# The start of a key/value connection string (`host=...`, `dbname = ...`).
_KEY_VALUE = re.compile(r"[A-Za-z_]+\s*=")


def _database_url(environ: Mapping[str, str]) -> str | None:
    return _connection_string(environ, "DATABASE_URL")


def _directory(environ: Mapping[str, str], name: str) -> Path | None:
    """A directory that may not exist yet (it is made when first written), or None."""
    raw = _raw(environ, name)
    if raw is None:
        return None
    path = Path(raw)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{name}: must be a directory, got {raw!r}, which exists and is not one")
    return path


def default_max_connections(soft_file_limit: int, database_pool_size: int) -> int:
    """The connection cap of an HTTP process when MYTICKET_MAX_CONNECTIONS is unset: the
    soft RLIMIT_NOFILE less what the process needs besides connections, so that it never
    runs out of file descriptors (accept failing, the spool or PostgreSQL unreachable)."""
    return max(16, soft_file_limit - FILE_DESCRIPTOR_RESERVE - database_pool_size)


def _trusted_proxies(environ: Mapping[str, str]) -> tuple[Network, ...]:
    values = _comma_list(environ, "MYTICKET_TRUSTED_PROXIES")
    if values is None:
        return ()
    try:
        return parse_networks(values)
    except ValueError as exc:
        raise ConfigError(f"MYTICKET_TRUSTED_PROXIES: {exc}") from None


def check_retention_has_archive(settings: Settings) -> None:
    """The service (`serve`, `worker`) refuses a retention without an archive directory:
    it would drop days of tickets that exist nowhere else. The one-shot commands do not
    check it, so that `myticket purge --without-archive` stays possible."""
    if settings.retention_days is not None and settings.archive_dir is None:
        raise ConfigError(
            f"MYTICKET_ARCHIVE_DIR: must be set when MYTICKET_RETENTION_DAYS is ({settings.retention_days}): "
            "the service purges only days it has archived; dropping data without a copy must be explicit "
            "(`myticket purge --without-archive`)"
        )


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Build Settings from an environment mapping, or raise ConfigError."""
    raw_log_level = environ.get("LOG_LEVEL", "INFO").strip()
    log_level = raw_log_level.upper() or "INFO"
    if log_level not in LOG_LEVELS:
        raise ConfigError(f"LOG_LEVEL: must be one of {', '.join(LOG_LEVELS)}, got {raw_log_level!r}")
    data_dir = Path(environ.get("MYTICKET_DATA_DIR", "").strip() or ".myticket")
    if data_dir.exists() and not data_dir.is_dir():
        raise ConfigError(f"MYTICKET_DATA_DIR: must be a directory, got {str(data_dir)!r}, which exists and is not one")
    max_body_bytes = _integer(environ, "MYTICKET_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES)
    max_pending_bytes = _integer(environ, "MYTICKET_MAX_PENDING_BYTES", DEFAULT_MAX_PENDING_BYTES)
    if max_pending_bytes < max_body_bytes:
        raise ConfigError(
            f"MYTICKET_MAX_PENDING_BYTES: must be at least MYTICKET_MAX_BODY_BYTES ({max_body_bytes}), "
            f"got {max_pending_bytes}"
        )
    return Settings(
        database_url=_database_url(environ),
        read_database_url=_connection_string(environ, "MYTICKET_READ_DATABASE_URL"),
        http_host=environ.get("HTTP_HOST", "").strip() or "0.0.0.0",
        http_port=_integer(environ, "HTTP_PORT", 9098, maximum=65535),
        max_body_bytes=max_body_bytes,
        max_pending_bytes=max_pending_bytes,
        batch_max_bytes=_integer(environ, "MYTICKET_BATCH_MAX_BYTES", DEFAULT_BATCH_MAX_BYTES),
        data_dir=data_dir,
        log_level=log_level,
        batch_max_size=_integer(environ, "MYTICKET_BATCH_MAX_SIZE", 256, maximum=5000),
        max_waiting_tickets=_integer(environ, "MYTICKET_MAX_WAITING_TICKETS", 20_000),
        flushes_in_flight=_integer(environ, "MYTICKET_FLUSHES_IN_FLIGHT", 1, maximum=16),
        http_processes=_integer(environ, "HTTP_PROCESSES", 1, maximum=MAX_HTTP_PROCESSES),
        workers=_integer(environ, "MYTICKET_WORKERS", 2, maximum=MAX_WORKER_LOOPS),
        worker_batch_max_bytes=_integer(environ, "MYTICKET_WORKER_BATCH_MAX_BYTES", DEFAULT_WORKER_BATCH_MAX_BYTES),
        worker_batch_size=_integer(environ, "MYTICKET_WORKER_BATCH_SIZE", DEFAULT_WORKER_BATCH_SIZE, maximum=5000),
        worker_max_attempts=_integer(environ, "MYTICKET_WORKER_MAX_ATTEMPTS", 3, maximum=100),
        database_pool_size=_integer(environ, "MYTICKET_DATABASE_POOL_SIZE", 10, maximum=1000),
        spool_replay_batch=_integer(environ, "MYTICKET_SPOOL_REPLAY_BATCH", 500, maximum=5000),
        spool_dir=Path(environ["MYTICKET_SPOOL_DIR"].strip()) if environ.get("MYTICKET_SPOOL_DIR", "").strip() else None,
        spool_max_bytes=_integer(environ, "MYTICKET_SPOOL_MAX_BYTES", DEFAULT_SPOOL_MAX_BYTES, minimum=0),
        webhook_secrets=_webhook_secrets(environ),
        api_tokens=_api_tokens(environ),
        admin_tokens=_api_tokens(environ, "MYTICKET_ADMIN_TOKENS"),
        idempotency_key_hours=_integer(
            environ, "MYTICKET_IDEMPOTENCY_KEY_HOURS", DEFAULT_IDEMPOTENCY_KEY_HOURS,
            minimum=MIN_IDEMPOTENCY_KEY_HOURS, maximum=MAX_IDEMPOTENCY_KEY_HOURS,
        ),
        read_timeout_seconds=_positive_seconds(environ, "MYTICKET_READ_TIMEOUT_SECONDS", 30.0),
        worker_placement=_choice(environ, "MYTICKET_WORKER", WORKER_PLACEMENTS),
        embedded_port=_integer(environ, "MYTICKET_EMBEDDED_PORT", DEFAULT_EMBEDDED_PORT, maximum=65535),
        retention_days=(
            _integer(environ, "MYTICKET_RETENTION_DAYS", 0, maximum=MAX_RETENTION_DAYS)
            if _raw(environ, "MYTICKET_RETENTION_DAYS") is not None else None
        ),
        archive_dir=_directory(environ, "MYTICKET_ARCHIVE_DIR"),
        maintenance_interval_seconds=_positive_seconds(
            environ, "MYTICKET_MAINTENANCE_INTERVAL_SECONDS", DEFAULT_MAINTENANCE_INTERVAL_SECONDS,
            maximum=MAX_MAINTENANCE_INTERVAL_SECONDS,
        ),
        log_format=_choice(environ, "MYTICKET_LOG_FORMAT", LOG_FORMATS),
        access_log=_switch(environ, "MYTICKET_ACCESS_LOG"),
        trusted_proxies=_trusted_proxies(environ),
        sender_share_percent=_integer(
            environ, "MYTICKET_SENDER_SHARE_PERCENT", DEFAULT_SENDER_SHARE_PERCENT, maximum=100
        ),
        max_connections=(
            _integer(environ, "MYTICKET_MAX_CONNECTIONS", 1, maximum=1_000_000)
            if _raw(environ, "MYTICKET_MAX_CONNECTIONS") is not None else None
        ),
        max_connections_per_sender=_integer(
            environ, "MYTICKET_MAX_CONNECTIONS_PER_SENDER", DEFAULT_MAX_CONNECTIONS_PER_SENDER, maximum=1_000_000
        ),
        min_body_bytes_per_second=_integer(
            environ, "MYTICKET_MIN_BODY_BYTES_PER_SECOND", DEFAULT_MIN_BODY_BYTES_PER_SECOND, minimum=0
        ),
    )


def mask_password(url: str) -> str:
    """The URL (or key/value string) with its password replaced, for log lines."""
    if "://" not in url:
        from .db.hosts import mask_key_value_password  # imported only for a key/value string

        return mask_key_value_password(url)
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()
