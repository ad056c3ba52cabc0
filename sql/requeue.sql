-- name: requeue_tickets
-- Puts the chosen tickets back in the queue so that the worker parses them again, and
-- wakes the workers once: those of the given statuses (rejected, duplicate), received in
-- [since, until) (either bound may be absent), with the given order reference, or the
-- one id. Their outcome, lines and digest go: what they were derived from, the
-- delivery, stays as it was received. The catalogue keeps its sightings.
WITH chosen AS (
    DELETE FROM ticket_outcomes
    WHERE status = ANY(%(statuses)s::text[])
      AND (%(since)s::timestamptz IS NULL OR received_at >= %(since)s::timestamptz)
      AND (%(until)s::timestamptz IS NULL OR received_at < %(until)s::timestamptz)
      AND (%(order_ref)s::text IS NULL OR order_ref = %(order_ref)s::text)
      AND (%(id)s::uuid IS NULL OR ticket_id = %(id)s::uuid)
      AND (%(received_at)s::timestamptz IS NULL OR received_at = %(received_at)s::timestamptz)
    RETURNING ticket_id, received_at, body_sha256
), lines_gone AS (
    DELETE FROM ticket_lines AS l
    USING chosen AS c
    WHERE l.ticket_id = c.ticket_id AND l.received_at = c.received_at
), digests_gone AS (
    DELETE FROM processed_bodies AS b
    USING chosen AS c
    WHERE b.body_sha256 = c.body_sha256 AND b.received_day = date_trunc('day', c.received_at, 'UTC')
      AND b.ticket_id = c.ticket_id
), requeued AS (
    INSERT INTO pending_tickets (received_at, id, body_bytes, body_lines)
    SELECT c.received_at, c.ticket_id, octet_length(d.body), myticket_body_lines(d.body)
    FROM chosen AS c
    JOIN deliveries AS d ON d.id = c.ticket_id AND d.received_at = c.received_at
    RETURNING 1
)
SELECT count(*) AS requeued, pg_notify('myticket_tickets', '') FROM requeued;

-- name: requeue_candidates
-- What requeue_tickets would put back in the queue, with the same filters, oldest
-- first: for `myticket reprocess --dry-run`.
SELECT ticket_id::text AS id, status, received_at, error
FROM ticket_outcomes
WHERE status = ANY(%(statuses)s::text[])
  AND (%(since)s::timestamptz IS NULL OR received_at >= %(since)s::timestamptz)
  AND (%(until)s::timestamptz IS NULL OR received_at < %(until)s::timestamptz)
  AND (%(order_ref)s::text IS NULL OR order_ref = %(order_ref)s::text)
  AND (%(id)s::uuid IS NULL OR ticket_id = %(id)s::uuid)
  AND (%(received_at)s::timestamptz IS NULL OR received_at = %(received_at)s::timestamptz)
ORDER BY received_at, ticket_id;
