-- name: count_tickets
-- Deliveries stored so far, compared with the 2xx answers of each load.
SELECT count(*) FROM deliveries;

-- name: any_pending
-- Whether a ticket is still unprocessed; the load waits for none before measuring the
-- next one. EXISTS stops at the first row of the queue, where count(*) cost
-- PostgreSQL about 9 ms per poll on a large table, ten polls a second.
SELECT EXISTS (SELECT 1 FROM pending_tickets);

-- name: stored_deliveries
-- The stored bytes, status and rejection reason of the given delivery ids, for the chaos
-- ledger.
SELECT d.id::text, d.body, coalesce(o.status, 'pending') AS status, o.error
FROM deliveries AS d
LEFT JOIN ticket_outcomes AS o ON o.ticket_id = d.id AND o.received_at = d.received_at
WHERE d.id = ANY(%(ids)s::uuid[]);

-- name: table_sizes
-- On-disk bytes (heap, TOAST, indexes) of the service's tables, one row per table family,
-- largest first: daily partitions such as deliveries_20250101 count under their name
-- without the _YYYYMMDD suffix. Leaf tables only (relkind 'r'): a partitioned parent has
-- no storage of its own. Found from the catalogue, so it measures whatever the schema
-- is; yoyo's own tables (_yoyo_migration, yoyo_lock, ...) are left out.
SELECT regexp_replace(c.relname, '_[0-9]{8}$', '') AS family,
       sum(pg_total_relation_size(c.oid))::bigint AS bytes
FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = 'public'
  AND c.relkind = 'r'
  AND c.relname !~ '^_?yoyo_'
GROUP BY 1
ORDER BY 2 DESC, 1;

-- name: raw_ticket_table_stats
-- Dead tuples, updates and vacuums of the tables holding the raw tickets (tickets, or
-- deliveries and its daily partitions): what rewriting a ticket's row after processing
-- costs. Cumulative counters, read from the statistics that backends flush at most
-- once a second (within about 10 s once idle), hence read until they stop moving.
SELECT coalesce(sum(n_dead_tup), 0)::bigint AS dead,
       coalesce(sum(n_tup_upd), 0)::bigint AS updated,
       coalesce(sum(n_tup_hot_upd), 0)::bigint AS hot_updated,
       coalesce(sum(vacuum_count + autovacuum_count), 0)::bigint AS vacuums
FROM pg_stat_user_tables
WHERE schemaname = 'public'
  AND relname ~ '^(tickets|deliveries|deliveries_[0-9]{8})$';

-- name: dead_claims
-- The journal rows of claims whose transaction ended without committing (their worker
-- died, or PostgreSQL stopped under them), each with the most lines of a ticket of it
-- still pending: chaos tells by it whether a death of the worker had a killer (50,000
-- lines) among its claims.
SELECT w.xact_id::text, coalesce(max(p.body_lines), 0) AS most_lines
FROM worker_claims AS w
CROSS JOIN LATERAL unnest(w.ids, w.received_at) AS c (id, received_at)
LEFT JOIN pending_tickets AS p ON p.received_at = c.received_at AND p.id = c.id
WHERE pg_xact_status(w.xact_id) IS DISTINCT FROM 'in progress'
GROUP BY w.xact_id;
