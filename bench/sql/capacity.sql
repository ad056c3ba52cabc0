-- name: storage_by_table
-- Bytes on disk of each table of the service, a partitioned table's partitions summed
-- under its own name: heap (with free-space and visibility maps), TOAST (with its
-- index) and indexes, for the capacity figures in docs/explanation/capacity.md.
SELECT coalesce(parent.relname, c.relname) AS family,
       sum(pg_table_size(c.oid) - coalesce(pg_total_relation_size(nullif(c.reltoastrelid, 0)), 0))::bigint AS heap,
       sum(coalesce(pg_total_relation_size(nullif(c.reltoastrelid, 0)), 0))::bigint AS toast,
       sum(pg_indexes_size(c.oid))::bigint AS indexes
FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace AND n.nspname = 'public'
LEFT JOIN pg_inherits AS i ON i.inhrelid = c.oid
LEFT JOIN pg_class AS parent ON parent.oid = i.inhparent
WHERE c.relkind = 'r' AND c.relname NOT LIKE '%yoyo%'
GROUP BY 1
ORDER BY 1;

-- name: vacuum
-- The steady state: the queue's deleted rows given back as vacuum would.
VACUUM;

-- name: stored_ticket_figures
-- How many tickets and lines are stored, and the average body size.
SELECT (SELECT count(*) FROM deliveries) AS tickets,
       (SELECT count(*) FROM ticket_lines) AS lines,
       (SELECT avg(octet_length(body)) FROM deliveries)::numeric(10,1) AS average_body;

-- name: wal_position
-- Where the write-ahead log is now: the difference across a load is the WAL it wrote,
-- which replicas, backups and the disk must carry.
SELECT pg_current_wal_lsn()::text;

-- name: wal_bytes_since
-- WAL bytes written since the given position.
SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %(since)s::pg_lsn)::bigint;
