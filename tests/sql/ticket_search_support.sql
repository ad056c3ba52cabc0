-- name: make_days_of_partitions
-- The partitions of the %(days)s UTC days ending with %(last_day)s.
SELECT myticket_create_day_partitions(%(last_day)s::date - offset_days) FROM generate_series(0, %(days)s - 1) AS offset_days;

-- name: fill_days_of_tickets
-- %(per_day)s tickets on each of the %(days)s UTC days ending with %(last_day)s, spread
-- over each day: every tenth pending, the others processed (six in ten, with an order
-- reference and three lines), rejected (two in ten) or duplicate (one in ten). Then
-- ANALYZE, so that the planner sees tables of that size.
WITH days AS (
    SELECT %(last_day)s::date - offset_days AS day FROM generate_series(0, %(days)s - 1) AS offset_days
), tickets AS (
    SELECT gen_random_uuid() AS id,
           (d.day::timestamp AT TIME ZONE 'UTC') + (n * interval '86399 seconds' / %(per_day)s) AS received_at,
           n
    FROM days AS d CROSS JOIN generate_series(1, %(per_day)s) AS n
), delivered AS (
    INSERT INTO deliveries (id, received_at, content_type, body)
    SELECT id, received_at, 'text/plain', convert_to('ticket ' || n, 'UTF8') FROM tickets
), queued AS (
    INSERT INTO pending_tickets (received_at, id, body_bytes, body_lines)
    SELECT received_at, id, 10, 1 FROM tickets WHERE n %% 10 = 0
), decided AS (
    INSERT INTO ticket_outcomes (ticket_id, received_at, status, order_ref, error, warnings)
    SELECT id, received_at,
           CASE WHEN n %% 10 <= 6 THEN 'processed' WHEN n %% 10 <= 8 THEN 'rejected' ELSE 'duplicate' END,
           CASE WHEN n %% 10 <= 6 THEN 'ORD-' || n END,
           CASE WHEN n %% 10 IN (7, 8) THEN 'line 2: bad price' END,
           '{}'
    FROM tickets WHERE n %% 10 <> 0
)
INSERT INTO ticket_lines (ticket_id, received_at, line_number, product_id, name, price)
SELECT id, received_at, line, 'P' || ((n + line) %% 50), 'product', 1.00
FROM tickets CROSS JOIN generate_series(1, 3) AS line
WHERE n %% 10 BETWEEN 1 AND 6;

-- name: analyze_ticket_tables
-- Statistics for the planner after a fill.
ANALYZE deliveries, pending_tickets, ticket_outcomes, ticket_lines;
