-- name: insert_ticket_row
-- A delivery written by another session: left uncommitted, it makes an INSERT of the
-- same delivery (id and reception time) wait for that session's transaction.
INSERT INTO deliveries (id, received_at, body) VALUES (%(id)s, %(received_at)s, '\x00'::bytea);

-- name: ticket_body_sizes
-- The size of every stored body.
SELECT octet_length(body) FROM deliveries;

-- name: sessions_waiting_for_a_transaction
-- Sessions waiting for another session's transaction to end: an INSERT of a delivery
-- that transaction wrote and has not committed.
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND wait_event_type = 'Lock' AND wait_event = 'transactionid';
