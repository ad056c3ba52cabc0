-- name: insert_tickets
-- Stores one batch of deliveries in a single statement, so a whole batch is one
-- commit (group commit): each body once into its day's partition of `deliveries`, and
-- its place in the worker's queue. Wakes the workers with one NOTIFY per batch, not
-- per row. ON CONFLICT makes a replay of the same deliveries (from the spool)
-- idempotent: a delivery already stored is neither stored nor queued again. The key
-- arrays are empty unless a ticket of the batch came with an Idempotency-Key.
WITH inserted AS (
    INSERT INTO deliveries (id, received_at, content_type, body)
    SELECT *
    FROM unnest(
        %(ids)s::uuid[],
        %(received_at)s::timestamptz[],
        %(content_types)s::text[],
        %(bodies)s::bytea[]
    )
    ON CONFLICT DO NOTHING
    RETURNING received_at, id, octet_length(body) AS body_bytes
), queued AS (
    -- Each body's lines (counted at ingest, see myticket.core.processing.body_lines) go
    -- with its queue row, for the worker's claim budget; joined by id on the small
    -- arrays only, so the bodies are not copied again.
    INSERT INTO pending_tickets (received_at, id, body_bytes, body_lines)
    SELECT n.received_at, n.id, n.body_bytes, c.body_lines
    FROM inserted AS n
    JOIN unnest(%(ids)s::uuid[], %(body_lines)s::integer[]) AS c (id, body_lines) ON c.id = n.id
), noted AS (
    -- The idempotency keys of the batch's keyed tickets that were stored now, noted in
    -- the same commit (a key never names a ticket that was not stored). A key noted the
    -- same day already stays as it was: a concurrent retry, marked duplicate later.
    INSERT INTO idempotency_keys (key, used_day, body_sha256, ticket_id, received_at)
    SELECT k.key, date_trunc('day', k.received_at, 'UTC'), k.body_sha256, k.id, k.received_at
    FROM unnest(
        %(key_ids)s::uuid[],
        %(key_received_at)s::timestamptz[],
        %(keys)s::text[],
        %(key_digests)s::bytea[]
    ) AS k (id, received_at, key, body_sha256)
    WHERE k.id IN (SELECT id FROM inserted)
    ON CONFLICT DO NOTHING
)
SELECT count(*) AS stored, pg_notify('myticket_tickets', '') FROM inserted;

-- name: create_day_partitions
-- Makes the partitions of the given UTC days that are missing (see migration 0004);
-- returns how many it made.
SELECT coalesce(sum(myticket_create_day_partitions(day)), 0)::integer AS made
FROM unnest(%(days)s::date[]) AS day;
