-- name: count_tickets
-- Deliveries stored so far, compared with the 2xx answers of each load.
SELECT count(*) FROM tickets;

-- name: count_pending
-- Tickets not yet processed; the load waits for zero before measuring the next one.
SELECT count(*) FROM tickets WHERE status = 'pending';
