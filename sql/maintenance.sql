-- name: try_maintenance_lock
-- Takes the retention lock for this session if no other session holds it, without
-- waiting: several processes run the maintenance loop, and only the one that gets it
-- archives and purges in this round (the others skip the round). Session-level, on a
-- connection of its own: it is released when that connection closes, even when its
-- process dies.
SELECT pg_try_advisory_lock(4242017304) AS held;

