-- name: idempotency_key_use
-- The first use of an Idempotency-Key among the days still alive (from `since_day`),
-- from the key's primary key index, in those days' partitions only.
SELECT ticket_id::text AS ticket_id, body_sha256
FROM idempotency_keys
WHERE key = %(key)s::text AND used_day >= %(since_day)s::timestamptz
ORDER BY used_day
LIMIT 1;

-- name: register_idempotency_key
-- Notes the key's first use once its ticket is stored: nothing when the key was noted
-- the same day already (a concurrent retry: both tickets are stored, and the later one
-- is marked duplicate by its body's digest).
INSERT INTO idempotency_keys (key, used_day, body_sha256, ticket_id, received_at)
VALUES (%(key)s::text, date_trunc('day', %(received_at)s::timestamptz, 'UTC'), %(body_sha256)s::bytea,
        %(ticket_id)s::uuid, %(received_at)s::timestamptz)
ON CONFLICT DO NOTHING
RETURNING 1 AS registered;

-- name: drop_idempotency_key_partitions
-- Drops the key partitions of the days before `before` (see migration 0005).
SELECT myticket_drop_idempotency_key_partitions(%(before)s::date) AS dropped;
