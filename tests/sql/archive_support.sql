-- name: ticket_snapshots
-- Everything stored of every ticket (delivery, status, outcome, lines, digests), in id
-- order, to compare a database before an archive and purge with after the restore.
SELECT d.id::text, d.received_at, d.content_type, d.body,
       coalesce(o.status, CASE WHEN p.id IS NOT NULL THEN 'pending' END) AS status,
       o.processed_at, coalesce(o.attempts, p.attempts), o.order_ref, o.vat, o.total, o.headers, o.warnings,
       o.error, o.text_encoding, o.body_sha256, o.duplicate_of::text,
       ARRAY(SELECT l.line_number || '|' || l.product_id || '|' || l.name || '|' || l.price::text
             FROM ticket_lines AS l WHERE l.ticket_id = d.id AND l.received_at = d.received_at
             ORDER BY l.line_number) AS lines,
       ARRAY(SELECT encode(b.body_sha256, 'hex') || '|' || b.received_day::text
             FROM processed_bodies AS b WHERE b.ticket_id = d.id ORDER BY 1) AS digests
FROM deliveries AS d
LEFT JOIN ticket_outcomes AS o ON o.ticket_id = d.id AND o.received_at = d.received_at
LEFT JOIN pending_tickets AS p ON p.id = d.id AND p.received_at = d.received_at
ORDER BY d.id;

-- name: product_rows
-- The whole catalogue, to show that a purge leaves it as it was.
SELECT product_id, name, price, first_seen_at, last_seen_at, last_ticket_id::text, times_seen
FROM products ORDER BY product_id;

-- name: day_tables
-- Which of the three ticket partitions of a day (suffix YYYYMMDD) exist.
SELECT relname::text FROM pg_class
WHERE relname = ANY(ARRAY['deliveries_' || %(suffix)s, 'ticket_outcomes_' || %(suffix)s,
                          'ticket_lines_' || %(suffix)s])
ORDER BY relname;

-- name: day_row_counts
-- The rows one day holds in each day-partitioned table, and the digests of its tickets
-- that the duplicate look-up still sees (those of a purged day are forgotten at once).
SELECT (SELECT count(*) FROM deliveries WHERE received_at >= %(lower)s AND received_at < %(upper)s),
       (SELECT count(*) FROM ticket_outcomes WHERE received_at >= %(lower)s AND received_at < %(upper)s),
       (SELECT count(*) FROM ticket_lines WHERE received_at >= %(lower)s AND received_at < %(upper)s),
       (SELECT count(*) FROM processed_bodies WHERE received_day = %(lower)s
          AND NOT EXISTS (SELECT 1 FROM forgotten_digest_days WHERE day = %(lower)s));

-- name: lock_ticket_lines
-- Held from another session's open transaction: every partition of ticket_lines is
-- locked, so whatever must drop or read one of them waits until this transaction ends.
LOCK TABLE ticket_lines IN ACCESS EXCLUSIVE MODE;

-- name: share_lock_ticket_lines
-- The lock any reader of ticket_lines holds: enough to make a DROP of a partition wait.
LOCK TABLE ticket_lines IN ACCESS SHARE MODE;

-- name: lock_requests_waiting_on_ticket_lines
-- Sessions waiting for a lock on ticket_lines or one of its partitions.
SELECT count(*) FROM pg_locks AS l JOIN pg_class AS c ON c.oid = l.relation
WHERE NOT l.granted AND c.relname LIKE 'ticket\_lines%%';

-- name: purge_sessions
-- Sessions (other than this one) running a purge.
SELECT count(*) FROM pg_stat_activity
WHERE query LIKE '%%myticket_purge_day%%' AND pid <> pg_backend_pid();

-- name: share_lock_ticket_lines_parent_only
-- A reader's lock on the partitioned table ticket_lines itself, not on its partitions:
-- purge takes every partition of its day, detaches the day's deliveries and outcomes,
-- and then waits here to detach its lines.
LOCK TABLE ONLY ticket_lines IN ACCESS SHARE MODE;

-- name: read_one_day_of_lines
-- What a long report on one old day holds: a reader's lock on that day's lines partition.
SELECT count(*) FROM ticket_lines WHERE received_at >= %(lower)s AND received_at < %(upper)s;
