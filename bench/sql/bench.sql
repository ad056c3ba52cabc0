-- name: count_tickets
-- Deliveries stored so far, compared with the 2xx answers of each load.
SELECT count(*) FROM tickets;

-- name: any_pending
-- Whether a ticket is still unprocessed; the load waits for none before measuring the
-- next one. EXISTS stops at the first row of the pending index, where count(*) cost
-- PostgreSQL about 9 ms per poll on a large table, ten polls a second.
SELECT EXISTS (SELECT 1 FROM tickets WHERE status = 'pending');

-- name: stored_deliveries
-- The stored bytes and status of the given delivery ids, for the chaos ledger.
SELECT id::text, body, status FROM tickets WHERE id = ANY(%(ids)s::uuid[]);
