-- name: insert_tickets
-- Stores one batch of deliveries in a single statement, so a whole batch is one
-- commit (group commit), and wakes the workers with one NOTIFY per batch, not per row.
-- ON CONFLICT makes a replay of the same delivery ids (from the spool) idempotent.
WITH inserted AS (
    INSERT INTO tickets (id, received_at, content_type, body)
    SELECT *
    FROM unnest(
        %(ids)s::uuid[],
        %(received_at)s::timestamptz[],
        %(content_types)s::text[],
        %(bodies)s::bytea[]
    )
    ON CONFLICT (id) DO NOTHING
    RETURNING 1
)
SELECT count(*) AS stored, pg_notify('myticket_tickets', '') FROM inserted;
