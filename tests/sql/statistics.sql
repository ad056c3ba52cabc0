-- name: raw_partition_counters
-- The row counters of every partition of `deliveries` (the raw bodies): rows inserted,
-- updated (HOT or not) and deleted one by one, as the statistics system last received them.
SELECT s.relname, s.n_tup_ins, s.n_tup_upd, s.n_tup_hot_upd, s.n_tup_del
FROM pg_stat_user_tables AS s
JOIN pg_inherits AS i ON i.inhrelid = s.relid
WHERE i.inhparent = 'deliveries'::regclass
ORDER BY s.relname;

-- name: write_counters
-- Rows inserted, updated and deleted per table, partitions summed into their parent:
-- proof that the statistics of the sessions that wrote have arrived.
SELECT coalesce(parent.relname, s.relname) AS table_name,
       sum(s.n_tup_ins)::bigint AS inserted, sum(s.n_tup_upd)::bigint AS updated,
       sum(s.n_tup_del)::bigint AS deleted
FROM pg_stat_user_tables AS s
LEFT JOIN pg_inherits AS i ON i.inhrelid = s.relid
LEFT JOIN pg_class AS parent ON parent.oid = i.inhparent
GROUP BY 1
ORDER BY 1;
