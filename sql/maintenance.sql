-- name: try_maintenance_lock
-- Takes the retention lock for this session if no other session holds it, without
-- waiting: several processes run the maintenance loop, and only the one that gets it
-- archives and purges in this round (the others skip the round). Session-level, on a
-- connection of its own: it is released when that connection closes, even when its
-- process dies.
SELECT pg_try_advisory_lock(4242017304) AS held;

-- name: day_partitions
-- The UTC days that have a partition of `deliveries`, oldest first, from the partition
-- names (deliveries_YYYYMMDD, made only by myticket_create_day_partitions).
SELECT to_date(substring(c.relname FROM 'deliveries_([0-9]{8})$'), 'YYYYMMDD') AS day
FROM pg_inherits AS i
JOIN pg_class AS c ON c.oid = i.inhrelid
WHERE i.inhparent = 'deliveries'::regclass
ORDER BY 1;
