-- name: archived_day_rows
-- What archive noted of each day, for retention's assertions.
SELECT day, tickets, pending FROM archived_days ORDER BY day;

-- name: hold_maintenance_lock
-- Takes the retention lock in this session, as a maintenance process that is archiving
-- would hold it: the services must skip their rounds until it is released.
SELECT pg_advisory_lock(4242017304);

-- name: release_maintenance_lock
-- Gives the retention lock back.
SELECT pg_advisory_unlock(4242017304);

-- name: ticket_count_by_day
-- How many deliveries each UTC day holds.
SELECT (received_at AT TIME ZONE 'UTC')::date AS day, count(*) FROM deliveries GROUP BY 1 ORDER BY 1;

-- name: hold_partition_lock
-- Takes the lock myticket_create_day_partitions waits for, so that a maintenance round
-- stays blocked in its first step until it is released.
SELECT pg_advisory_lock(4242017303);

-- name: release_partition_lock
-- Gives that lock back.
SELECT pg_advisory_unlock(4242017303);

-- name: sessions_waiting_for_an_advisory_lock
-- Sessions of this database waiting for an advisory lock.
SELECT count(*) FROM pg_locks
WHERE locktype = 'advisory' AND NOT granted
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database());
