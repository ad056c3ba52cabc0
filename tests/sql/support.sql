-- name: reset_tables
-- Empties every table the service writes, between tests.
TRUNCATE deliveries, pending_tickets, ticket_outcomes, ticket_lines, products, processed_bodies, archived_days,
         idempotency_keys, worker_claims, forgotten_digest_days;

-- name: count_tickets
-- How many deliveries are stored.
SELECT count(*) FROM deliveries;

-- name: ticket_delivery
-- One stored delivery, as the tests check it byte for byte.
SELECT d.id::text, d.body, d.content_type,
       coalesce(o.status, CASE WHEN p.id IS NOT NULL THEN 'pending' END) AS status
FROM deliveries AS d
LEFT JOIN ticket_outcomes AS o ON o.ticket_id = d.id AND o.received_at = d.received_at
LEFT JOIN pending_tickets AS p ON p.id = d.id AND p.received_at = d.received_at
WHERE d.id = %(id)s;

-- name: stored_ids
-- The ids of every stored delivery.
SELECT id::text FROM deliveries;


-- name: applied_migration_ids
-- Every row yoyo wrote for an applied migration (one per migration when all is well).
SELECT migration_id FROM _yoyo_migration ORDER BY migration_id;

-- name: status_counts
-- How many tickets are in each status.
SELECT status, count(*)
FROM (SELECT status FROM ticket_outcomes UNION ALL SELECT 'pending' FROM pending_tickets) AS statuses
GROUP BY status ORDER BY status;

-- name: count_lines
-- How many ticket lines are stored.
SELECT count(*) FROM ticket_lines;

-- name: sum_times_seen
-- The catalogue's total of sightings.
SELECT coalesce(sum(times_seen), 0) FROM products;

-- name: leave_stale_migration_lock
-- The row yoyo's lock leaves behind when its migrator is killed mid-migration.
INSERT INTO yoyo_lock (locked, ctime, pid) VALUES (1, now(), 999999);

-- name: hold_migration_lock
-- What a live migrator holds while it migrates (released when the session ends).
SELECT pg_advisory_lock(4242017302);

-- name: partitions_of_day
-- Which of the day-partitioned tables have a partition for the given day.
SELECT parent.relname
FROM pg_inherits AS i
JOIN pg_class AS child ON child.oid = i.inhrelid
JOIN pg_class AS parent ON parent.oid = i.inhparent
WHERE child.relname = parent.relname || '_' || to_char(%(day)s::date, 'YYYYMMDD')
ORDER BY 1;

-- name: drop_day
-- A day's partitions dropped by another session (as purge does), without an archive.
SELECT myticket_purge_day(%(day)s::date, false);

-- name: count_idempotency_keys
-- How many idempotency keys are noted.
SELECT count(*) FROM idempotency_keys;

-- name: rejections
-- Each rejected ticket and why.
SELECT ticket_id::text, error FROM ticket_outcomes WHERE status = 'rejected' ORDER BY ticket_id;

-- name: body_lines_in_sql
-- The line count of a body as SQL counts it (requeue, restore, migration 0006).
SELECT myticket_body_lines(%(body)s::bytea);

-- name: pending_body_lines
-- The line count stored with each queue row.
SELECT id::text, body_lines FROM pending_tickets ORDER BY id;

-- name: worker_claims_left
-- Journal rows of claims left behind (by a dead worker, or not yet committed).
SELECT count(*) FROM worker_claims;

-- name: digest_rows
-- Every digest processed_bodies holds, with its ticket.
SELECT encode(body_sha256, 'hex'), ticket_id::text FROM processed_bodies ORDER BY 1, 2;

-- name: fill_digests
-- As many digests as a day of service leaves, spread over the given days, analysed:
-- so that the planner chooses as it would on a database in service.
INSERT INTO processed_bodies (body_sha256, received_day, ticket_id)
SELECT sha256(n::text::bytea), %(first_day)s::timestamptz + (n %% %(days)s) * interval '1 day', gen_random_uuid()
FROM generate_series(1, %(digests)s) AS n;
ANALYZE processed_bodies;
