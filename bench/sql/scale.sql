-- name: create_past_day_partitions
-- The four partitions of one past UTC day (migration 0004's function), before it is filled.
SELECT myticket_create_day_partitions(%(day)s::date) AS made;

-- name: fill_day
-- One past day of service in one statement, as the worker would have left it: per_day
-- distinct deliveries spread evenly over the day (UUIDv7 ids carrying their reception
-- instant, so GET /tickets/{id} finds their partition), bodies in bench/loadgen.py's
-- format, and their outcomes. One in 50 is rejected (no product section, as the parser
-- says), two in 50 are duplicates of the ticket received just before them; the rest are
-- processed, with their lines, their digest in processed_bodies and their sightings
-- merged into the catalogue (products picked evenly among `products`). Everything is
-- derived from hashes of (day, ticket number), so a fill is the same every time.
-- Days must be filled oldest first: the catalogue keeps the last day's name and price.
WITH tickets AS MATERIALIZED (
    SELECT n,
           received_at,
           (lpad(to_hex((extract(epoch FROM received_at) * 1000)::bigint), 12, '0')
            || '7' || substr(noise, 1, 3) || '8' || substr(noise, 4, 15))::uuid AS id,
           CASE WHEN n %% 50 = 25 THEN 'rejected'
                WHEN n %% 50 IN (10, 40) THEN 'duplicate'
                ELSE 'processed' END AS kind,
           1 + abs(hashtextextended(noise, 1)) %% 6 AS line_count
    FROM generate_series(0, %(per_day)s - 1) AS n
    CROSS JOIN LATERAL (
        SELECT (%(day)s::date)::timestamp AT TIME ZONE 'UTC'
               + (n::bigint * 86400000 / %(per_day)s) * interval '1 millisecond' AS received_at,
               md5(%(day)s::text || ':' || n) AS noise
    ) AS derived
), lines AS MATERIALIZED (
    SELECT t.n, t.id, t.received_at, t.kind, position, 5 + position AS line_number,
           product, 'P' || lpad(product::text, greatest(5, length(product::text)), '0') AS product_id,
           'Produit ' || product AS name, (cents / 100.0)::numeric(12,2) AS price
    FROM tickets AS t
    CROSS JOIN LATERAL generate_series(1, t.line_count) AS position
    CROSS JOIN LATERAL (
        SELECT abs(hashtextextended(t.id::text || position, 2)) %% %(products)s AS product,
               50 + abs(hashtextextended(t.id::text || position, 3)) %% 4950 AS cents
    ) AS drawn
    WHERE t.kind <> 'duplicate'
), bodies AS MATERIALIZED (
    SELECT b.n, b.order_ref, b.vat, b.total, b.body, sha256(b.body) AS digest
    FROM (
        SELECT s.n, s.order_ref, s.vat, s.total,
               convert_to(
                   format(E'Order: %%s\nVAT: %%s\nTotal: %%s\n', s.order_ref, s.vat, s.total)
                   || CASE WHEN s.kind = 'rejected' THEN ''
                           ELSE E'\nproduct,product_id,price\n' || s.product_text || E'\n' END,
                   'UTF8') AS body
        FROM (
            SELECT l.n, min(l.kind) AS kind, 'fill-' || %(day)s::text || '-' || l.n AS order_ref,
                   (floor(sum(l.price) * 10) / 100)::numeric(12,2) AS vat, sum(l.price) AS total,
                   string_agg(l.name || ',' || l.product_id || ',' || l.price, E'\n' ORDER BY l.position) AS product_text
            FROM lines AS l
            GROUP BY l.n
        ) AS s
    ) AS b
), stored AS (
    INSERT INTO deliveries (id, received_at, content_type, body)
    SELECT t.id, t.received_at, 'text/plain', b.body
    FROM tickets AS t
    JOIN bodies AS b ON b.n = CASE WHEN t.kind = 'duplicate' THEN t.n - 1 ELSE t.n END
    RETURNING 1
), decided AS (
    INSERT INTO ticket_outcomes (ticket_id, received_at, status, processed_at, attempts, order_ref, vat, total,
                                 headers, warnings, error, text_encoding, body_sha256, duplicate_of)
    SELECT t.id, t.received_at, t.kind, t.received_at + interval '200 milliseconds', 0,
           CASE WHEN t.kind = 'processed' THEN b.order_ref END,
           CASE WHEN t.kind = 'processed' THEN b.vat END,
           CASE WHEN t.kind = 'processed' THEN b.total END,
           CASE WHEN t.kind = 'processed'
                THEN jsonb_build_object('Order', b.order_ref, 'VAT', b.vat::text, 'Total', b.total::text) END,
           '{}',
           CASE WHEN t.kind = 'rejected'
                THEN 'line 3: no product section after this line (expected a blank line then a CSV header)' END,
           CASE WHEN t.kind = 'processed' THEN 'utf-8' END,
           b.digest,
           CASE WHEN t.kind = 'duplicate' THEN previous.id END
    FROM tickets AS t
    JOIN bodies AS b ON b.n = CASE WHEN t.kind = 'duplicate' THEN t.n - 1 ELSE t.n END
    LEFT JOIN tickets AS previous ON t.kind = 'duplicate' AND previous.n = t.n - 1
    RETURNING 1
), lined AS (
    INSERT INTO ticket_lines (ticket_id, received_at, line_number, product_id, name, price)
    SELECT id, received_at, line_number, product_id, name, price
    FROM lines
    WHERE kind = 'processed'
    RETURNING 1
), digested AS (
    INSERT INTO processed_bodies (body_sha256, received_day, ticket_id)
    SELECT b.digest, date_trunc('day', t.received_at, 'UTC'), t.id
    FROM tickets AS t
    JOIN bodies AS b ON b.n = t.n
    WHERE t.kind = 'processed'
    RETURNING 1
), catalogued AS (
    INSERT INTO products AS p (product_id, name, price, first_seen_at, last_seen_at, last_ticket_id, times_seen)
    SELECT product_id, min(name),
           (array_agg(price ORDER BY received_at DESC, id DESC, position DESC))[1],
           min(received_at), max(received_at),
           (array_agg(id ORDER BY received_at DESC, id DESC))[1],
           count(DISTINCT id)
    FROM lines
    WHERE kind = 'processed'
    GROUP BY product_id
    ORDER BY product_id
    ON CONFLICT (product_id) DO UPDATE SET
        name = excluded.name,
        price = excluded.price,
        last_ticket_id = excluded.last_ticket_id,
        last_seen_at = GREATEST(p.last_seen_at, excluded.last_seen_at),
        first_seen_at = LEAST(p.first_seen_at, excluded.first_seen_at),
        times_seen = p.times_seen + excluded.times_seen
    RETURNING 1
)
SELECT (SELECT count(*) FROM stored) AS deliveries,
       (SELECT count(*) FROM decided) AS outcomes,
       (SELECT count(*) FROM lined) AS lines,
       (SELECT count(*) FROM digested) AS digests,
       (SELECT count(*) FROM catalogued) AS products;

-- name: filled_ticket_sample
-- Ids of tickets of the filled days (before `before`), for the reads measured while the
-- load runs: drawn at random from a 1 in 100 sample of rows, so every day is represented.
SELECT ticket_id::text
FROM ticket_outcomes TABLESAMPLE BERNOULLI (1)
WHERE received_at < %(before)s::timestamptz
ORDER BY random()
LIMIT %(count)s;

-- name: enable_statement_statistics
-- pg_stat_statements in the service's database (the library is preloaded by the bench).
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;

-- name: reset_statement_statistics
SELECT pg_stat_statements_reset();

-- name: statement_statistics
-- Every statement's calls, execution and planning time and shared blocks touched since
-- the last reset, in this database.
SELECT s.query, s.calls, s.total_exec_time, s.total_plan_time,
       s.shared_blks_hit + s.shared_blks_read AS blocks, s.rows
FROM pg_stat_statements AS s
JOIN pg_database AS d ON d.oid = s.dbid
WHERE d.datname = current_database();

-- name: preload_statement_statistics
-- Loads pg_stat_statements at the next start of the bench's own server.
ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements';

-- name: track_planning
-- Planning time too: a statement on a partitioned table plans over every day kept.
ALTER SYSTEM SET pg_stat_statements.track_planning = on;

-- name: vacuum_analyze
-- The filled days as autovacuum would have left them after months: visibility maps set,
-- statistics taken, so the load that follows does not pay for them.
VACUUM (ANALYZE);

-- name: checkpoint
-- And written out, as months of service would have: otherwise the checkpoint of the
-- fill's 3 GB runs during the filled load, and its CPU counts as PostgreSQL's per ticket.
CHECKPOINT;

-- name: count_products
SELECT count(*) FROM products;

-- name: database_bytes
SELECT pg_database_size(current_database());
