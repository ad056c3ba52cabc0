-- SQLite, for the local spool file only (myticket/intake/spool_file.py and spool.py); PostgreSQL queries are in sql/*.sql.

-- name: create_spool_table
-- Tickets waiting for PostgreSQL, in arrival order; the delivery id is unique.
CREATE TABLE IF NOT EXISTS spooled_tickets (
    position     INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL UNIQUE,
    received_at  TEXT NOT NULL,
    content_type TEXT,
    body         BLOB NOT NULL
);

-- name: create_owner_table
-- The one database the spooled tickets are for: its URL (password masked) and, once
-- PostgreSQL has answered, its system identifier and name. At most one row.
CREATE TABLE IF NOT EXISTS spool_owner (
    singleton         INTEGER PRIMARY KEY CHECK (singleton = 1),
    database_url      TEXT NOT NULL,
    system_identifier TEXT,
    database_name     TEXT,
    recorded_at       TEXT NOT NULL
);

-- name: spool_owner
-- Whom the spool belongs to, if anyone.
SELECT database_url, system_identifier, database_name FROM spool_owner WHERE singleton = 1;

-- name: record_spool_owner
-- Makes the spool belong to this database (replacing the owner of an empty spool).
INSERT INTO spool_owner (singleton, database_url, system_identifier, database_name, recorded_at)
VALUES (1, ?, ?, ?, ?)
ON CONFLICT (singleton) DO UPDATE SET
    database_url = excluded.database_url,
    system_identifier = excluded.system_identifier,
    database_name = excluded.database_name,
    recorded_at = excluded.recorded_at;

-- name: holds_tickets
-- Whether any ticket waits, without counting them all.
SELECT EXISTS (SELECT 1 FROM spooled_tickets);

-- name: spool_ticket
-- One spooled ticket; a delivery id already there is left as it is.
INSERT OR IGNORE INTO spooled_tickets (id, received_at, content_type, body) VALUES (?, ?, ?, ?);

-- name: oldest_spooled
-- The next tickets to replay after a position, oldest first: at most the given count,
-- and only while their bodies add up to at most the given bytes (the first always,
-- however large). Sizes are read with length(), which does not load a body; only the
-- chosen are read.
WITH candidates AS (
    SELECT position, length(body) AS size FROM spooled_tickets WHERE position > ?
    ORDER BY position LIMIT ?
), running AS (
    SELECT position,
           sum(size) OVER (ORDER BY position) AS bytes_so_far,
           row_number() OVER (ORDER BY position) AS rank
    FROM candidates
)
SELECT spooled.position, spooled.id, spooled.received_at, spooled.content_type, spooled.body
FROM running JOIN spooled_tickets AS spooled USING (position)
WHERE running.bytes_so_far <= ? OR running.rank = 1
ORDER BY position;

-- name: unspool_ticket
-- Forgets a ticket once PostgreSQL has committed it.
DELETE FROM spooled_tickets WHERE id = ?;

-- name: count_spooled
-- How many tickets wait in the spool for PostgreSQL: those after the given position
-- (the ones up to it are in PostgreSQL already; only their delete failed).
SELECT count(*) FROM spooled_tickets WHERE position > ?;

-- name: forget_replayed
-- Deletes the tickets up to a position, all committed in PostgreSQL already, whose
-- delete failed before (a full disk).
DELETE FROM spooled_tickets WHERE position <= ?;

-- name: use_write_ahead_log
-- WAL: readers and one writer at a time across processes, crash-safe.
PRAGMA journal_mode=WAL;

-- name: sync_fully
-- fsync at every commit, so a spooled ticket survives a crash or power loss.
PRAGMA synchronous=FULL;

-- name: is_a_spool
-- Whether this file has the spool's tables already (then its set-up may be skipped).
SELECT count(*) = 2 FROM sqlite_master WHERE type = 'table' AND name IN ('spooled_tickets', 'spool_owner');

-- name: vacuum_incrementally
-- Set before the first table of a new file: pages freed by a replay can then be given
-- back to the file system (by release_free_pages), so the file shrinks after a replay.
PRAGMA auto_vacuum=INCREMENTAL;

-- name: limit_wal_after_checkpoint
-- After a checkpoint, the WAL file is truncated to at most this many bytes (4 MiB), so
-- it does not keep the size of the largest burst on disk.
PRAGMA journal_size_limit=4194304;

-- name: release_free_pages
-- Gives the pages freed by deleted tickets back to the file system.
PRAGMA incremental_vacuum;

-- name: checkpoint_and_truncate_wal
-- Copies the WAL into the file and truncates the WAL to zero bytes (skipped by SQLite
-- while another process reads an older snapshot).
PRAGMA wal_checkpoint(TRUNCATE);

-- name: begin_read
-- A read transaction: one snapshot, and no write lock (a full disk can still be read).
BEGIN DEFERRED;

-- name: begin_write
-- Takes the write lock at once, so two processes never deadlock upgrading a read.
BEGIN IMMEDIATE;

-- name: page_size
-- Bytes per page, for the margin a write needs beyond its bodies.
PRAGMA page_size;
