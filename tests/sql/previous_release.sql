-- name: insert_previous_ticket
-- One ticket as the previous release stored it (schema 0001-0003): body and processing
-- state in one row of `tickets`, seq assigned at insertion.
INSERT INTO tickets (id, received_at, content_type, body, status, order_ref, vat, total, headers, warnings, error,
                     text_encoding, processed_at, attempts, body_sha256, duplicate_of)
VALUES (%(id)s, %(received_at)s, %(content_type)s, %(body)s, %(status)s, %(order_ref)s, %(vat)s, %(total)s,
        %(headers)s::jsonb, %(warnings)s::text[], %(error)s, %(text_encoding)s, %(processed_at)s, %(attempts)s,
        %(body_sha256)s, %(duplicate_of)s);

-- name: insert_previous_line
-- One line of a processed ticket, as the previous worker wrote it.
INSERT INTO ticket_lines (ticket_id, line_number, product_id, name, price)
VALUES (%(ticket_id)s, %(line_number)s, %(product_id)s, %(name)s, %(price)s);

-- name: insert_previous_processed_body
-- The digest of a body the previous worker processed, naming the first ticket with it.
INSERT INTO processed_bodies (body_sha256, ticket_id) VALUES (%(body_sha256)s, %(ticket_id)s);

-- name: insert_previous_product
-- A catalogue entry pointing at its latest ticket by that ticket's seq, as before.
INSERT INTO products (product_id, name, price, first_seen_at, last_seen_at, last_ticket_seq, times_seen)
SELECT %(product_id)s, %(name)s, %(price)s, %(first_seen_at)s, %(last_seen_at)s, seq, %(times_seen)s
FROM tickets WHERE id = %(last_ticket_id)s;

-- name: previous_tickets
-- Every ticket of the previous schema, every column but seq, in seq order.
SELECT id::text, received_at, content_type, body, status, order_ref, vat, total, headers, warnings, error,
       text_encoding, processed_at, attempts, body_sha256, duplicate_of::text
FROM tickets ORDER BY seq;

-- name: previous_lines
-- Every line of the previous schema.
SELECT ticket_id::text, line_number, product_id, name, price FROM ticket_lines ORDER BY 1, 2;

-- name: previous_processed_bodies
-- Every digest of the previous schema with its ticket.
SELECT body_sha256, ticket_id::text FROM processed_bodies ORDER BY 1;

-- name: previous_products
-- The previous catalogue, its seq turned back into the ticket id it names.
SELECT p.product_id, p.name, p.price, p.first_seen_at, p.last_seen_at, t.id::text AS last_ticket_id, p.times_seen
FROM products AS p LEFT JOIN tickets AS t ON t.seq = p.last_ticket_seq
ORDER BY 1;

-- name: migrated_tickets
-- Every ticket of the write-once schema, in the columns of previous_tickets, in reception
-- order (the order the rollback gives seq).
SELECT d.id::text, d.received_at, d.content_type, d.body, coalesce(o.status, 'pending') AS status, o.order_ref,
       o.vat, o.total, o.headers, coalesce(o.warnings, '{}') AS warnings, o.error, o.text_encoding, o.processed_at,
       coalesce(o.attempts, p.attempts, 0) AS attempts, o.body_sha256, o.duplicate_of::text
FROM deliveries AS d
LEFT JOIN ticket_outcomes AS o ON o.ticket_id = d.id AND o.received_at = d.received_at
LEFT JOIN pending_tickets AS p ON p.id = d.id AND p.received_at = d.received_at
ORDER BY d.received_at, d.id;

-- name: migrated_lines
-- Every line of the write-once schema, in the columns of previous_lines.
SELECT ticket_id::text, line_number, product_id, name, price FROM ticket_lines ORDER BY 1, 2;

-- name: migrated_processed_bodies
-- Every digest of the write-once schema with its ticket, in the columns of previous_processed_bodies.
SELECT body_sha256, ticket_id::text FROM processed_bodies ORDER BY 1;

-- name: migrated_products
-- The catalogue of the write-once schema, in the columns of previous_products.
SELECT product_id, name, price, first_seen_at, last_seen_at, last_ticket_id::text, times_seen
FROM products ORDER BY 1;

-- name: day_partition_names
-- The partitions of every day-partitioned table, by parent.
SELECT parent.relname AS parent, child.relname AS partition
FROM pg_inherits AS i
JOIN pg_class AS parent ON parent.oid = i.inhparent
JOIN pg_class AS child ON child.oid = i.inhrelid
WHERE parent.relname IN ('deliveries', 'ticket_outcomes', 'ticket_lines')
ORDER BY 1, 2;

-- name: service_tables
-- Which of the tables of either schema exist now.
SELECT relname FROM pg_class
WHERE relkind IN ('r', 'p')
  AND relname IN ('tickets', 'deliveries', 'pending_tickets', 'ticket_outcomes', 'ticket_lines', 'processed_bodies',
                  'products', 'archived_days', 'idempotency_keys', 'worker_claims', 'forgotten_digest_days')
ORDER BY 1;

-- name: previous_deliveries
-- What the first schema (0001) holds of each ticket.
SELECT id::text, received_at, content_type, body FROM tickets ORDER BY seq;
