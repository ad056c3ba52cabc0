-- name: listen_tickets
-- Subscribes a worker's connection to the one-per-batch wake-up of insert_tickets.
LISTEN myticket_tickets;

-- name: claim_pending_tickets
-- Locks the oldest pending tickets for this worker's transaction and returns those whose
-- cost fits in max_bytes together (always the first, however costly). A ticket's cost
-- is what processing it holds in memory: its body bytes plus line_cost per line (the
-- parsed lines, outcome rows and JSON they become; counted at ingest, so no body is
-- read to decide). Tickets another worker holds are skipped, so no ticket is processed
-- twice. Rows past the budget stay locked, untouched, until this transaction ends and
-- are claimable again by the next claim. locked_count (on every row) tells a claim cut
-- short from a queue that held no more. The bodies come next, by claimed_bodies.
--
-- A ticket named by the journal row of a claim whose transaction ended without
-- committing (worker_claims, see migration 0006: its worker died) is a suspect: it is
-- claimed alone, never behind or beside another ticket, so that a second death is
-- its own. `crashes` counts the one-ticket claims of it that died: the deaths that were
-- certainly its own. xact_id names this transaction for the journal row that the
-- worker commits, on another connection, before processing (journal_claim).
WITH locked AS (
    SELECT received_at, id, body_bytes, body_lines
    FROM pending_tickets
    ORDER BY received_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), orphaned AS (
    SELECT ids, received_at FROM worker_claims
    WHERE pg_xact_status(xact_id) IS DISTINCT FROM 'in progress'
), suspects AS (
    SELECT l.received_at, l.id, count(*) FILTER (WHERE cardinality(o.ids) = 1) AS crashes
    FROM locked AS l
    JOIN orphaned AS o ON l.id = ANY(o.ids)
    GROUP BY l.received_at, l.id
), sized AS (
    SELECT l.id, l.received_at, coalesce(s.crashes, 0) AS crashes,
           sum(l.body_bytes + l.body_lines::bigint * %(line_cost)s) OVER ordered AS cost_up_to_here,
           count(s.id) OVER ordered AS suspects_up_to_here,
           row_number() OVER ordered AS position, count(*) OVER () AS locked_count
    FROM locked AS l
    LEFT JOIN suspects AS s ON s.received_at = l.received_at AND s.id = l.id
    WINDOW ordered AS (ORDER BY l.received_at, l.id)
)
SELECT s.id::text AS id, s.received_at, s.crashes, s.locked_count,
       pg_current_xact_id()::text AS xact_id,
       -- The claimed tickets as one text (on the first row only), which the worker hands
       -- back as it is to claimed_bodies and journal_claim: 500 ids and times adapted by
       -- the driver both ways cost 3 ms a claim; one string, nothing.
       CASE WHEN s.position = 1
            THEN string_agg(s.id::text || '|' || s.received_at::text, ',') OVER () END AS journal
FROM sized AS s
WHERE s.position = 1 OR (s.cost_up_to_here <= %(max_bytes)s AND s.suspects_up_to_here = 0)
ORDER BY s.received_at, s.id;

-- name: claimed_bodies
-- The bodies of a claim (its `journal` text), read from `deliveries` by key, which is
-- only read here, never locked or written. since and until, the claim's first and last
-- reception times, come as literals: the plan holds the partitions of the claim's days
-- only. Read in the claim's statement, the bodies were looked up through every kept
-- day's partition (pruned at run time, once per ticket): at 90 days kept, that cost
-- more than the reading. LATERAL with LIMIT keeps the planner from a hash join, which
-- would scan whole days on the estimates of a just-filled partition.
SELECT split_part(t, '|', 1) AS id, d.body
FROM unnest(string_to_array(%(tickets)s, ',')) AS t
CROSS JOIN LATERAL (
    SELECT body FROM deliveries
    WHERE id = split_part(t, '|', 1)::uuid AND received_at = split_part(t, '|', 2)::timestamptz
      AND received_at >= %(since)s::timestamptz AND received_at <= %(until)s::timestamptz
    LIMIT 1
) AS d;

-- name: journal_claim
-- Notes a claim's tickets, committed on its own (not in the claim's transaction) before
-- they are parsed: if the worker dies processing them, the row stays, and its claim's
-- transaction is no longer in progress. record_outcomes deletes it with the outcomes.
-- tickets: claim_pending_tickets' `journal` (id|received_at, comma-separated).
INSERT INTO worker_claims (xact_id, ids, received_at)
SELECT %(xact_id)s::xid8, array_agg(split_part(t, '|', 1)::uuid), array_agg(split_part(t, '|', 2)::timestamptz)
FROM unnest(string_to_array(%(tickets)s, ',')) AS t;

-- name: forget_claims
-- Deletes journal rows of claims that failed without their worker dying (an error, a
-- cancellation): their tickets are not suspects. Runs after the claim rolled back.
DELETE FROM worker_claims WHERE xact_id = ANY(%(xact_ids)s::xid8[]);

-- name: register_processed_bodies
-- Records the digest of each body about to be processed, in its ticket's day, and
-- returns the digests it recorded: their tickets came first. A digest already there for
-- that day belongs to an earlier ticket (another worker's, committed meanwhile), of
-- which this one is a duplicate; only those are looked up again. A row of a purged
-- (forgotten) day is not there: create_day_partitions deleted it when the day came
-- back. Sorted, so two workers inserting the same digests wait for each other instead
-- of deadlocking.
INSERT INTO processed_bodies (body_sha256, received_day, ticket_id)
SELECT digest, date_trunc('day', received_at, 'UTC'), ticket_id
FROM unnest(%(digests)s::bytea[], %(received_at)s::timestamptz[], %(ticket_ids)s::uuid[])
    AS r (digest, received_at, ticket_id)
ORDER BY 1, 2
ON CONFLICT (body_sha256, received_day) DO NOTHING
RETURNING body_sha256;

-- name: first_tickets_with_bodies
-- Which ticket each digest was first processed as: the one of the earliest day kept.
-- One index range per digest, whatever the number of days. The days forgotten are read
-- once (a handful of rows), not joined: no estimate of theirs can turn the probes into
-- a join of every digest with every row.
SELECT DISTINCT ON (body_sha256) body_sha256, ticket_id::text AS ticket_id
FROM processed_bodies
WHERE body_sha256 = ANY(%(digests)s::bytea[])
  AND received_day <> ALL (ARRAY(SELECT day FROM forgotten_digest_days))
ORDER BY body_sha256, received_day;

-- name: insert_ticket_lines
-- The lines of processed tickets, in their ticket's day, with the price each product
-- had on that ticket. Rows travel as one JSON array: one parameter to adapt instead of
-- one per value, which was most of the worker's CPU.
INSERT INTO ticket_lines (ticket_id, received_at, line_number, product_id, name, price)
SELECT ticket_id, received_at, line_number, product_id, name, price
FROM jsonb_to_recordset(%(rows)s::jsonb)
    AS r (ticket_id uuid, received_at timestamptz, line_number integer, product_id text, name text,
          price numeric);

-- name: upsert_products
-- Merges one batch's sightings into the catalogue, in product_id order so that
-- concurrent workers lock rows in the same order. Name and price follow the most
-- recently received ticket, compared by (received_at, ticket id).
INSERT INTO products AS p
    (product_id, name, price, first_seen_at, last_seen_at, last_ticket_id, times_seen)
SELECT product_id, name, price, first_seen_at, last_seen_at, last_ticket_id, times_seen
FROM jsonb_to_recordset(%(rows)s::jsonb)
    AS r (product_id text, name text, price numeric, first_seen_at timestamptz,
          last_seen_at timestamptz, last_ticket_id uuid, times_seen bigint)
ORDER BY product_id
ON CONFLICT (product_id) DO UPDATE SET
    name = CASE WHEN (excluded.last_seen_at, excluded.last_ticket_id) > (p.last_seen_at, p.last_ticket_id)
                THEN excluded.name ELSE p.name END,
    price = CASE WHEN (excluded.last_seen_at, excluded.last_ticket_id) > (p.last_seen_at, p.last_ticket_id)
                 THEN excluded.price ELSE p.price END,
    last_ticket_id = CASE WHEN (excluded.last_seen_at, excluded.last_ticket_id) > (p.last_seen_at, p.last_ticket_id)
                          THEN excluded.last_ticket_id ELSE p.last_ticket_id END,
    last_seen_at = GREATEST(p.last_seen_at, excluded.last_seen_at),
    first_seen_at = LEAST(p.first_seen_at, excluded.first_seen_at),
    times_seen = p.times_seen + excluded.times_seen;

-- name: record_outcomes
-- Writes each ticket's outcome (processed, rejected or duplicate) in one statement,
-- from one JSON array of outcome records, and takes the tickets off the queue (their
-- queue rows are locked by this transaction's claim), and the claim's journal row.
-- Attempts already charged to a ticket stay on its outcome. The warnings' JSON array is
-- read straight into text[] by the record type, not by a subquery per row.
WITH outcomes AS (
    SELECT * FROM jsonb_to_recordset(%(rows)s::jsonb)
        AS u (id uuid, received_at timestamptz, status text, order_ref text, vat numeric, total numeric,
              headers jsonb, warnings text[], error text, text_encoding text, body_sha256 text,
              duplicate_of uuid)
), dequeued AS (
    DELETE FROM pending_tickets AS p
    USING outcomes AS u
    WHERE p.received_at = u.received_at AND p.id = u.id
    RETURNING p.id, p.received_at, p.attempts
), journalled AS (
    -- This claim's journal row, and those of dead claims whose tickets are all done now
    -- (pending no more, or dequeued here): committed with the outcomes, so a death
    -- after this commit charges nothing.
    DELETE FROM worker_claims AS j
    WHERE j.xact_id = pg_current_xact_id()
       OR (j.ids && ARRAY(SELECT id FROM outcomes)
           AND pg_xact_status(j.xact_id) IS DISTINCT FROM 'in progress'
           AND NOT EXISTS (
               SELECT 1
               FROM unnest(j.ids, j.received_at) AS c (id, received_at)
               JOIN pending_tickets AS p ON p.received_at = c.received_at AND p.id = c.id
               WHERE c.id <> ALL(ARRAY(SELECT id FROM outcomes))))
)
INSERT INTO ticket_outcomes (ticket_id, received_at, status, attempts, order_ref, vat, total, headers, warnings,
                             error, text_encoding, body_sha256, duplicate_of)
SELECT u.id, u.received_at, u.status, q.attempts, u.order_ref, u.vat, u.total, u.headers,
       u.warnings, u.error, u.text_encoding,
       decode(u.body_sha256, 'hex'), u.duplicate_of
FROM outcomes AS u
JOIN dequeued AS q ON q.id = u.id AND q.received_at = u.received_at;

-- name: record_failed_attempt
-- received_at, when the id carries it (UUIDv7), lets the queue's key find the row.
-- Counts an unexpected processing failure; at the bound the ticket is rejected with
-- the error (its outcome written, its queue row deleted), so one bad ticket never
-- blocks the queue. Returns nothing when the ticket is no longer pending.
WITH attempt AS (
    SELECT received_at, id, attempts + 1 AS attempts
    FROM pending_tickets
    WHERE id = %(id)s::uuid
      AND (%(received_at)s::timestamptz IS NULL OR received_at = %(received_at)s::timestamptz)
), charged AS (
    UPDATE pending_tickets AS p
    SET attempts = a.attempts
    FROM attempt AS a
    WHERE p.received_at = a.received_at AND p.id = a.id AND a.attempts < %(max_attempts)s
    RETURNING p.received_at
), given_up AS (
    DELETE FROM pending_tickets AS p
    USING attempt AS a
    WHERE p.received_at = a.received_at AND p.id = a.id AND a.attempts >= %(max_attempts)s
    RETURNING p.received_at, p.id
), rejected AS (
    INSERT INTO ticket_outcomes (ticket_id, received_at, status, attempts, error)
    SELECT g.id, g.received_at, 'rejected', a.attempts, %(error)s
    FROM given_up AS g JOIN attempt AS a ON a.id = g.id AND a.received_at = g.received_at
)
-- From what was written, not from what was read: a row another worker took off the
-- queue meanwhile was neither charged nor given up, and nothing is returned for it.
SELECT 'pending' AS status, received_at FROM charged
UNION ALL
SELECT 'rejected' AS status, received_at FROM given_up;

-- name: count_pending
-- The backlog, for the pending-tickets gauge.
SELECT count(*) AS pending FROM pending_tickets;

-- name: pending_backlog
-- The backlog and the reception time of its oldest ticket, for the gauges the alerts
-- watch; min(received_at) is the first entry of the primary key's index.
SELECT count(*) AS pending, min(received_at) AS oldest_received_at FROM pending_tickets;

-- name: ticket_status
-- One ticket's status, to explain why `reprocess --id` found nothing to requeue.
SELECT coalesce(o.status, CASE WHEN p.id IS NOT NULL THEN 'pending' END) AS status
FROM deliveries AS d
LEFT JOIN ticket_outcomes AS o ON o.ticket_id = d.id AND o.received_at = d.received_at
LEFT JOIN pending_tickets AS p ON p.id = d.id AND p.received_at = d.received_at
WHERE d.id = %(id)s::uuid
  AND (%(received_at)s::timestamptz IS NULL OR d.received_at = %(received_at)s::timestamptz);
