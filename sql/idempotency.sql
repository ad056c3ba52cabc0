-- name: idempotency_key_use
-- The first use of an Idempotency-Key among the days still alive (from `since_day`),
-- from the key's primary key index, in those days' partitions only.
SELECT ticket_id::text AS ticket_id, body_sha256
FROM idempotency_keys
WHERE key = %(key)s::text AND used_day >= %(since_day)s::timestamptz
ORDER BY used_day
LIMIT 1;

-- name: drop_idempotency_key_partitions
-- Drops the key partitions of the days before `before` (see migration 0005).
SELECT myticket_drop_idempotency_key_partitions(%(before)s::date) AS dropped;
