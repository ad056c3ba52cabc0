-- SQLite, for the local spool file only (myticket/spool.py); PostgreSQL queries are in sql/*.sql.

-- name: create_spool_table
-- Tickets waiting for PostgreSQL, in arrival order; the delivery id is unique.
CREATE TABLE IF NOT EXISTS spooled_tickets (
    position     INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL UNIQUE,
    received_at  TEXT NOT NULL,
    content_type TEXT,
    body         BLOB NOT NULL
);

-- name: spool_ticket
-- One spooled ticket; a delivery id already there is left as it is.
INSERT OR IGNORE INTO spooled_tickets (id, received_at, content_type, body) VALUES (?, ?, ?, ?);

-- name: oldest_spooled
-- The next tickets to replay, oldest first.
SELECT id, received_at, content_type, body FROM spooled_tickets ORDER BY position LIMIT ?;

-- name: unspool_ticket
-- Forgets a ticket once PostgreSQL has committed it.
DELETE FROM spooled_tickets WHERE id = ?;

-- name: count_spooled
-- How many tickets wait in the spool.
SELECT count(*) FROM spooled_tickets;

-- name: use_write_ahead_log
-- WAL: readers and one writer at a time across processes, crash-safe.
PRAGMA journal_mode=WAL;

-- name: sync_fully
-- fsync at every commit, so a spooled ticket survives a crash or power loss.
PRAGMA synchronous=FULL;

-- name: begin_write
-- Takes the write lock at once, so two processes never deadlock upgrading a read.
BEGIN IMMEDIATE;

-- name: page_size
-- Bytes per page, to compute the space the spooled tickets use.
PRAGMA page_size;

-- name: page_count
-- Pages in the file, used or free.
PRAGMA page_count;

-- name: free_page_count
-- Pages freed by replays, reused before the file grows.
PRAGMA freelist_count;
