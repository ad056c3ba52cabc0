-- name: listen_tickets
-- Subscribes a worker's connection to the one-per-batch wake-up of insert_tickets.
LISTEN myticket_tickets;

-- name: claim_pending_tickets
-- Locks the oldest pending tickets for this worker's transaction and returns those whose
-- bodies fit in max_bytes together (always the first, however large); tickets another
-- worker holds are skipped, so no ticket is processed twice. Sizes come from the value
-- headers (octet_length reads no body), so bodies past the budget never leave the
-- server; their rows stay locked, untouched, until this transaction ends and are
-- pending again for the next claim. locked_count (on every row) tells a claim cut
-- short by the budget from a queue that held no more. A worker that dies before committing releases its
-- locks, leaving the tickets pending.
WITH locked AS (
    SELECT id, seq, received_at, octet_length(body) AS size
    FROM tickets
    WHERE status = 'pending'
    ORDER BY seq
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), sized AS (
    SELECT id, seq, received_at, sum(size) OVER (ORDER BY seq) AS size_up_to_here,
           row_number() OVER (ORDER BY seq) AS position, count(*) OVER () AS locked_count
    FROM locked
)
SELECT s.id::text AS id, s.seq, s.received_at, t.body, s.locked_count
FROM sized AS s
JOIN tickets AS t ON t.id = s.id
WHERE s.position = 1 OR s.size_up_to_here <= %(max_bytes)s
ORDER BY s.seq;

-- name: register_processed_bodies
-- Records the digest of each body about to be processed; a digest already there
-- belongs to an earlier ticket, of which this one is a duplicate. Sorted, so two
-- workers inserting the same digests wait for each other instead of deadlocking.
INSERT INTO processed_bodies (body_sha256, ticket_id)
SELECT * FROM unnest(%(digests)s::bytea[], %(ticket_ids)s::uuid[]) ORDER BY 1
ON CONFLICT (body_sha256) DO NOTHING;

-- name: first_tickets_with_bodies
-- Which ticket each digest was first processed as.
SELECT body_sha256, ticket_id::text AS ticket_id
FROM processed_bodies
WHERE body_sha256 = ANY(%(digests)s::bytea[]);

-- name: insert_ticket_lines
-- The lines of processed tickets, with the price each product had on that ticket.
-- Rows travel as one JSON array: one parameter to adapt instead of one per value,
-- which was most of the worker's CPU.
INSERT INTO ticket_lines (ticket_id, line_number, product_id, name, price)
SELECT ticket_id, line_number, product_id, name, price
FROM jsonb_to_recordset(%(rows)s::jsonb)
    AS r (ticket_id uuid, line_number integer, product_id text, name text, price numeric);

-- name: upsert_products
-- Merges one batch's sightings into the catalogue, in product_id order so that
-- concurrent workers lock rows in the same order. Name and price follow the most
-- recently received ticket, compared by (received_at, seq).
INSERT INTO products AS p
    (product_id, name, price, first_seen_at, last_seen_at, last_ticket_seq, times_seen)
SELECT product_id, name, price, first_seen_at, last_seen_at, last_ticket_seq, times_seen
FROM jsonb_to_recordset(%(rows)s::jsonb)
    AS r (product_id text, name text, price numeric, first_seen_at timestamptz,
          last_seen_at timestamptz, last_ticket_seq bigint, times_seen bigint)
ORDER BY product_id
ON CONFLICT (product_id) DO UPDATE SET
    name = CASE WHEN (excluded.last_seen_at, excluded.last_ticket_seq) > (p.last_seen_at, p.last_ticket_seq)
                THEN excluded.name ELSE p.name END,
    price = CASE WHEN (excluded.last_seen_at, excluded.last_ticket_seq) > (p.last_seen_at, p.last_ticket_seq)
                 THEN excluded.price ELSE p.price END,
    last_ticket_seq = CASE WHEN (excluded.last_seen_at, excluded.last_ticket_seq) > (p.last_seen_at, p.last_ticket_seq)
                           THEN excluded.last_ticket_seq ELSE p.last_ticket_seq END,
    last_seen_at = GREATEST(p.last_seen_at, excluded.last_seen_at),
    first_seen_at = LEAST(p.first_seen_at, excluded.first_seen_at),
    times_seen = p.times_seen + excluded.times_seen;

-- name: record_outcomes
-- Writes each ticket's outcome (processed, rejected or duplicate) in one statement,
-- from one JSON array of outcome records.
UPDATE tickets AS t
SET status = u.status,
    order_ref = u.order_ref,
    vat = u.vat,
    total = u.total,
    headers = u.headers,
    warnings = ARRAY(SELECT jsonb_array_elements_text(u.warnings)),
    error = u.error,
    text_encoding = u.text_encoding,
    body_sha256 = decode(u.body_sha256, 'hex'),
    duplicate_of = u.duplicate_of,
    processed_at = now()
FROM jsonb_to_recordset(%(rows)s::jsonb)
    AS u (id uuid, status text, order_ref text, vat numeric, total numeric, headers jsonb,
          warnings jsonb, error text, text_encoding text, body_sha256 text, duplicate_of uuid)
WHERE t.id = u.id;

-- name: record_failed_attempt
-- Counts an unexpected processing failure; at the bound the ticket is rejected with
-- the error, so one bad ticket never blocks the queue.
UPDATE tickets
SET attempts = attempts + 1,
    status = CASE WHEN attempts + 1 >= %(max_attempts)s THEN 'rejected' ELSE status END,
    error = CASE WHEN attempts + 1 >= %(max_attempts)s THEN %(error)s ELSE error END,
    processed_at = CASE WHEN attempts + 1 >= %(max_attempts)s THEN now() ELSE processed_at END
WHERE id = %(id)s AND status = 'pending'
RETURNING status, received_at;

-- name: count_pending
-- The backlog, for the pending-tickets gauge.
SELECT count(*) AS pending FROM tickets WHERE status = 'pending';

-- name: requeue_tickets
-- Puts the chosen tickets (of the given statuses, optionally received since a date,
-- optionally one id) back to pending so that the worker parses them again, and wakes
-- the workers once.
WITH requeued AS (
    UPDATE tickets
    SET status = 'pending', attempts = 0, error = NULL, warnings = '{}',
        processed_at = NULL, duplicate_of = NULL
    WHERE status = ANY(%(statuses)s::text[])
      AND (%(since)s::timestamptz IS NULL OR received_at >= %(since)s::timestamptz)
      AND (%(id)s::uuid IS NULL OR id = %(id)s::uuid)
    RETURNING 1
)
SELECT count(*) AS requeued, pg_notify('myticket_tickets', '') FROM requeued;

-- name: requeue_candidates
-- What requeue_tickets would put back to pending, with the same filters, oldest first:
-- for `myticket reprocess --dry-run`.
SELECT id::text AS id, status, received_at, error
FROM tickets
WHERE status = ANY(%(statuses)s::text[])
  AND (%(since)s::timestamptz IS NULL OR received_at >= %(since)s::timestamptz)
  AND (%(id)s::uuid IS NULL OR id = %(id)s::uuid)
ORDER BY received_at, id;

-- name: ticket_status
-- One ticket's status, to explain why `reprocess --id` found nothing to requeue.
SELECT status FROM tickets WHERE id = %(id)s::uuid;
