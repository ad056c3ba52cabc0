-- name: backend_pid
-- The server process of this session, whose CPU time the measurement reads.
SELECT pg_backend_pid();

-- name: empty_ingest_tables
-- A fresh start for each variant, so every one inserts into the same empty tables.
TRUNCATE deliveries, pending_tickets;

-- name: drop_deliveries_key
-- Variant: deliveries without its primary key (ON CONFLICT then checks nothing).
ALTER TABLE deliveries DROP CONSTRAINT deliveries_pkey;

-- name: add_deliveries_key
-- Puts the key back, as migration 0004 made it.
ALTER TABLE deliveries ADD PRIMARY KEY (id, received_at);

-- name: drop_queue_key
-- Variant: the queue without its primary key.
ALTER TABLE pending_tickets DROP CONSTRAINT pending_tickets_pkey;

-- name: add_queue_key
-- Puts the key back, as migration 0004 made it.
ALTER TABLE pending_tickets ADD PRIMARY KEY (received_at, id);
