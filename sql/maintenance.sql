-- name: try_maintenance_lock
-- Takes the retention lock for this session if no other session holds it, without
-- waiting: several processes run the maintenance loop, and only the one that gets it
-- archives and purges in this round (the others skip the round). Session-level, on a
-- connection of its own: it is released when that connection closes, even when its
-- process dies.
SELECT pg_try_advisory_lock(4242017304) AS held;


-- name: forget_purged_digests
-- Deletes the digests of one purged day (the oldest noted in forgotten_digest_days),
-- and its note, in one transaction; returns the day, or nothing when none is left. Off
-- the hot path: the look-up already ignores these rows since the purge. SKIP LOCKED:
-- two processes forget two different days.
WITH forgotten AS (
    SELECT day FROM forgotten_digest_days ORDER BY day LIMIT 1 FOR UPDATE SKIP LOCKED
), digests_gone AS (
    DELETE FROM processed_bodies AS b USING forgotten AS f WHERE b.received_day = f.day
), note_gone AS (
    DELETE FROM forgotten_digest_days AS n USING forgotten AS f WHERE n.day = f.day
)
SELECT day FROM forgotten;
