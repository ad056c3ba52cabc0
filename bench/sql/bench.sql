-- name: count_tickets
-- Deliveries stored so far, compared with the 2xx answers of each load.
SELECT count(*) FROM deliveries;

-- name: any_pending
-- Whether a ticket is still unprocessed; the load waits for none before measuring the
-- next one. EXISTS stops at the first row of the queue, where count(*) cost
-- PostgreSQL about 9 ms per poll on a large table, ten polls a second.
SELECT EXISTS (SELECT 1 FROM pending_tickets);

-- name: stored_deliveries
-- The stored bytes and status of the given delivery ids, for the chaos ledger.
SELECT d.id::text, d.body, coalesce(o.status, 'pending') AS status
FROM deliveries AS d
LEFT JOIN ticket_outcomes AS o ON o.ticket_id = d.id AND o.received_at = d.received_at
WHERE d.id = ANY(%(ids)s::uuid[]);
