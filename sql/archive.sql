-- name: day_partitions
-- The UTC days that have a partition of `deliveries`, oldest first, read from the
-- catalog (the partitions are named deliveries_YYYYMMDD by myticket_create_day_partitions):
-- what archive and purge walk through, whether or not a day holds tickets.
SELECT to_date(substr(c.relname, length('deliveries_') + 1), 'YYYYMMDD') AS day
FROM pg_inherits AS i
JOIN pg_class AS c ON c.oid = i.inhrelid
WHERE i.inhparent = 'deliveries'::regclass
  AND c.relname ~ '^deliveries_[0-9]{8}$'
ORDER BY day;

-- name: archive_snapshot
-- One page of an archive is read in one short read-only snapshot: its tickets and their
-- lines agree (a ticket processed between the two reads would otherwise be archived as
-- pending with lines), and no snapshot lives longer than a page to hold back vacuum.
SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY;

-- name: archive_page
-- One keyset page of a day's tickets after (after_id, after_received_at), in primary key
-- order, which the key's index serves without sorting the day (for UUIDv7 ids it is also
-- reception order). At most `limit` tickets whose bodies fit in max_bytes together (always
-- the first, however large): sizes come from the index scan's rows (octet_length reads
-- a TOASTed value's header, not the value), bodies are fetched only for the page. Each
-- ticket comes with its status and outcome, or its queue row's attempts when pending.
WITH keys AS (
    SELECT id, received_at, octet_length(body) AS body_bytes
    FROM deliveries
    WHERE received_at >= %(lower)s::timestamptz AND received_at < %(upper)s::timestamptz
      AND (id, received_at) > (%(after_id)s::uuid, %(after_received_at)s::timestamptz)
    ORDER BY id, received_at
    LIMIT %(limit)s
), sized AS (
    SELECT id, received_at,
           sum(body_bytes) OVER (ORDER BY id, received_at) AS size_up_to_here,
           row_number() OVER (ORDER BY id, received_at) AS position
    FROM keys
)
SELECT s.id::text AS id, s.received_at, d.content_type, d.body,
       coalesce(o.status, 'pending') AS status,
       o.processed_at, coalesce(o.attempts, p.attempts, 0) AS attempts, o.order_ref, o.vat, o.total,
       o.headers, coalesce(o.warnings, '{}') AS warnings, o.error, o.text_encoding, o.body_sha256,
       o.duplicate_of::text AS duplicate_of
FROM sized AS s
-- LATERAL with LIMIT and the day's bounds, as in claim_pending_tickets: each row is
-- fetched by its key in the day's partition, never by a join over the whole day.
CROSS JOIN LATERAL (
    SELECT content_type, body FROM deliveries
    WHERE id = s.id AND received_at = s.received_at
      AND received_at >= %(lower)s::timestamptz AND received_at < %(upper)s::timestamptz
    LIMIT 1
) AS d
LEFT JOIN LATERAL (
    SELECT * FROM ticket_outcomes
    WHERE ticket_id = s.id AND received_at = s.received_at
      AND received_at >= %(lower)s::timestamptz AND received_at < %(upper)s::timestamptz
    LIMIT 1
) AS o ON true
LEFT JOIN LATERAL (
    SELECT attempts FROM pending_tickets WHERE received_at = s.received_at AND id = s.id LIMIT 1
) AS p ON true
WHERE s.position = 1 OR s.size_up_to_here <= %(max_bytes)s
ORDER BY s.id, s.received_at;

-- name: archive_page_lines
-- The lines of one page's tickets, in one query, from the day's partition only.
SELECT ticket_id::text AS ticket_id, line_number, product_id, name, price
FROM ticket_lines
WHERE received_at >= %(lower)s::timestamptz AND received_at < %(upper)s::timestamptz
  AND ticket_id = ANY(%(ids)s::uuid[])
ORDER BY ticket_id, line_number;

-- name: record_archived_day
-- Notes that a day's file is in place and complete, with what it held when written:
-- purge compares these counts with the day before dropping it. Archiving a day again
-- replaces the note.
INSERT INTO archived_days AS a (day, tickets, pending, file_name, sha256, directory, archived_at)
VALUES (%(day)s, %(tickets)s, %(pending)s, %(file_name)s, %(sha256)s, %(directory)s, now())
ON CONFLICT (day) DO UPDATE SET
    tickets = excluded.tickets, pending = excluded.pending, file_name = excluded.file_name,
    sha256 = excluded.sha256, directory = excluded.directory, archived_at = excluded.archived_at;

-- name: set_purge_lock_timeout
-- A purge waits for the day's tables at most this long, in its own transaction only:
-- waiting longer would hold every insert queued behind its lock request.
SELECT set_config('lock_timeout', %(timeout)s, true);

-- name: purge_day
-- Drops one day's partitions, all or none, in the caller's transaction (migration 0004);
-- returns 'purged', 'absent' or why it refused.
SELECT myticket_purge_day(%(day)s::date, %(require_archive)s) AS result;

-- name: restore_tickets
-- Stores archived tickets back, each once: a delivery already there (restored before,
-- or never purged) is left as it is, and nothing else is written for it. For each one
-- newly stored: its queue row when it was pending, else its outcome; its lines; and the
-- digest of a processed body, so that a later identical body is still a duplicate of it.
-- Bodies travel as a bytea array, everything else as one JSON record per ticket, in the
-- same order. An id is stored once whatever the time it comes with: one already stored
-- on any day, or met earlier in the same batch, is left out (the key holds the time, so
-- ON CONFLICT alone would store a second delivery under the same id).
WITH incoming AS (
    SELECT DISTINCT ON ((r.record->>'id')::uuid) r.body, r.record
    FROM unnest(%(bodies)s::bytea[], %(records)s::jsonb[]) WITH ORDINALITY AS r (body, record, position)
    ORDER BY (r.record->>'id')::uuid, r.position
), inserted AS (
    INSERT INTO deliveries (id, received_at, content_type, body)
    SELECT (record->>'id')::uuid, (record->>'received_at')::timestamptz, record->>'content_type', body
    FROM incoming
    WHERE NOT EXISTS (SELECT 1 FROM deliveries AS d WHERE d.id = (incoming.record->>'id')::uuid)
    ON CONFLICT DO NOTHING
    RETURNING id, received_at, octet_length(body) AS body_bytes, myticket_body_lines(body) AS body_lines
), stored AS (
    SELECT n.id, n.received_at, n.body_bytes, n.body_lines, i.record
    FROM inserted AS n
    JOIN incoming AS i ON (i.record->>'id')::uuid = n.id AND (i.record->>'received_at')::timestamptz = n.received_at
), queued AS (
    INSERT INTO pending_tickets (received_at, id, body_bytes, body_lines, attempts)
    SELECT received_at, id, body_bytes, body_lines, (record->>'attempts')::integer
    FROM stored
    WHERE record->>'status' = 'pending'
), outcomes AS (
    INSERT INTO ticket_outcomes (ticket_id, received_at, status, processed_at, attempts, order_ref, vat, total,
                                 headers, warnings, error, text_encoding, body_sha256, duplicate_of)
    SELECT id, received_at, record->>'status', (record->>'processed_at')::timestamptz,
           (record->>'attempts')::integer, record->>'order_ref', (record->>'vat')::numeric,
           (record->>'total')::numeric, nullif(record->'headers', 'null'::jsonb),
           ARRAY(SELECT jsonb_array_elements_text(record->'warnings')), record->>'error',
           record->>'text_encoding', decode(record->>'body_sha256', 'hex'), (record->>'duplicate_of')::uuid
    FROM stored
    WHERE record->>'status' <> 'pending'
), lines AS (
    INSERT INTO ticket_lines (ticket_id, received_at, line_number, product_id, name, price)
    SELECT s.id, s.received_at, l.line_number, l.product_id, l.name, l.price
    FROM stored AS s
    CROSS JOIN jsonb_to_recordset(s.record->'lines')
        AS l (line_number integer, product_id text, name text, price numeric)
), digests AS (
    INSERT INTO processed_bodies (body_sha256, received_day, ticket_id)
    SELECT decode(record->>'body_sha256', 'hex'), date_trunc('day', received_at, 'UTC'), id
    FROM stored
    WHERE record->>'status' = 'processed' AND record->>'body_sha256' IS NOT NULL
    ORDER BY 1, 2
    ON CONFLICT (body_sha256, received_day) DO NOTHING
)
-- Pending tickets restored are work for the workers: wake them.
SELECT count(*) AS stored, pg_notify('myticket_tickets', '') FROM stored;

-- name: archived_day
-- What archive noted of one day: purge checks that this file is still where it was
-- written, listed in its manifest, with this SHA-256, before dropping the day.
SELECT day, tickets, pending, file_name, sha256, directory
FROM archived_days
WHERE day = %(day)s;

-- name: day_holds_tickets
-- Whether a day holds any ticket: an empty day has nothing to lose, so purge drops it
-- without looking for its archive file (as myticket_purge_day does without the note).
SELECT EXISTS (
    SELECT 1 FROM deliveries
    WHERE received_at >= %(lower)s::timestamptz AND received_at < %(upper)s::timestamptz
) AS holds_tickets;
