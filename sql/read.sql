-- name: ticket_by_id
-- One ticket's delivery and processing result, for GET /tickets/{id}, with how many
-- lines it has (counted from the primary key's index; the lines come by pages).
-- received_at is the instant a UUIDv7 id carries: with it, every table is read in one
-- day's partition only; it is NULL for the random ids of tickets stored before.
SELECT d.id::text AS id,
       coalesce(o.status, 'pending') AS status,
       d.received_at, d.content_type, octet_length(d.body) AS body_bytes,
       o.processed_at, o.order_ref, o.vat, o.total, o.headers, coalesce(o.warnings, '{}') AS warnings,
       o.error, o.text_encoding, o.duplicate_of::text AS duplicate_of,
       coalesce(o.attempts, p.attempts, 0) AS attempts,
       (SELECT count(*) FROM ticket_lines AS l
        WHERE l.ticket_id = d.id AND l.received_at = d.received_at
          AND (%(received_at)s::timestamptz IS NULL OR l.received_at = %(received_at)s::timestamptz)) AS line_count
FROM deliveries AS d
LEFT JOIN ticket_outcomes AS o
    ON o.ticket_id = d.id AND o.received_at = d.received_at
   AND (%(received_at)s::timestamptz IS NULL OR o.received_at = %(received_at)s::timestamptz)
LEFT JOIN pending_tickets AS p ON p.id = d.id AND p.received_at = d.received_at
WHERE d.id = %(id)s::uuid
  AND (%(received_at)s::timestamptz IS NULL OR d.received_at = %(received_at)s::timestamptz);

-- name: lines_of_ticket
-- One page of a processed ticket's lines in their order on the ticket, keyset-paginated
-- by line_number (the primary key's index), in the ticket's day when its id says which.
-- The caller asks for one row more than the page holds, to know whether a next page
-- exists.
SELECT line_number, product_id, name, price
FROM ticket_lines
WHERE ticket_id = %(id)s::uuid AND line_number > %(after)s
  AND (%(received_at)s::timestamptz IS NULL OR received_at = %(received_at)s::timestamptz)
ORDER BY line_number
LIMIT %(limit)s;

-- name: products_page
-- One page of the catalogue, keyset-paginated by product_id. The caller asks for one row
-- more than the page holds, to know whether a next page exists.
SELECT product_id, name, price, first_seen_at, last_seen_at, times_seen
FROM products
WHERE %(after)s::text IS NULL OR product_id > %(after)s::text
ORDER BY product_id
LIMIT %(limit)s;

-- name: product_by_id
-- One product of the catalogue.
SELECT product_id, name, price, first_seen_at, last_seen_at, times_seen
FROM products
WHERE product_id = %(product_id)s;

-- name: tickets_page
-- One page of GET /tickets without order_ref or product_id: the tickets of the chosen
-- statuses received in [since, until), newest first, keyset-paginated by (received_at,
-- id) below `after`. One branch per status, each read from an index in the order of the
-- answer (pending_tickets' key; ticket_outcomes_status_received_idx) and in the
-- window's day partitions only; a branch whose status is not asked for is removed when
-- the statement is planned. The caller asks for one row more than the page holds.
SELECT id, received_at, status, error, warning_count, order_ref, duplicate_of
FROM (
    (SELECT p.id::text AS id, p.received_at, 'pending' AS status, NULL::text AS error, 0 AS warning_count,
            NULL::text AS order_ref, NULL::text AS duplicate_of
     FROM pending_tickets AS p
     WHERE 'pending' = ANY(%(statuses)s::text[])
       AND p.received_at >= %(since)s::timestamptz AND p.received_at < %(until)s::timestamptz
       AND (%(after_id)s::uuid IS NULL
            OR (p.received_at, p.id) < (%(after_received_at)s::timestamptz, %(after_id)s::uuid))
     ORDER BY p.received_at DESC, p.id DESC
     LIMIT %(limit)s)
    UNION ALL
    (SELECT o.ticket_id::text, o.received_at, o.status, left(o.error, %(error_chars)s),
            cardinality(o.warnings), o.order_ref, o.duplicate_of::text
     FROM ticket_outcomes AS o
     WHERE 'processed' = ANY(%(statuses)s::text[]) AND o.status = 'processed'
       AND o.received_at >= %(since)s::timestamptz AND o.received_at < %(until)s::timestamptz
       AND (%(after_id)s::uuid IS NULL
            OR (o.received_at, o.ticket_id) < (%(after_received_at)s::timestamptz, %(after_id)s::uuid))
     ORDER BY o.received_at DESC, o.ticket_id DESC
     LIMIT %(limit)s)
    UNION ALL
    (SELECT o.ticket_id::text, o.received_at, o.status, left(o.error, %(error_chars)s),
            cardinality(o.warnings), o.order_ref, o.duplicate_of::text
     FROM ticket_outcomes AS o
     WHERE 'rejected' = ANY(%(statuses)s::text[]) AND o.status = 'rejected'
       AND o.received_at >= %(since)s::timestamptz AND o.received_at < %(until)s::timestamptz
       AND (%(after_id)s::uuid IS NULL
            OR (o.received_at, o.ticket_id) < (%(after_received_at)s::timestamptz, %(after_id)s::uuid))
     ORDER BY o.received_at DESC, o.ticket_id DESC
     LIMIT %(limit)s)
    UNION ALL
    (SELECT o.ticket_id::text, o.received_at, o.status, left(o.error, %(error_chars)s),
            cardinality(o.warnings), o.order_ref, o.duplicate_of::text
     FROM ticket_outcomes AS o
     WHERE 'duplicate' = ANY(%(statuses)s::text[]) AND o.status = 'duplicate'
       AND o.received_at >= %(since)s::timestamptz AND o.received_at < %(until)s::timestamptz
       AND (%(after_id)s::uuid IS NULL
            OR (o.received_at, o.ticket_id) < (%(after_received_at)s::timestamptz, %(after_id)s::uuid))
     ORDER BY o.received_at DESC, o.ticket_id DESC
     LIMIT %(limit)s)
) AS chosen
ORDER BY received_at DESC, id DESC
LIMIT %(limit)s;

-- name: tickets_page_by_order_ref
-- One page of GET /tickets with order_ref (and the other filters but product_id): read
-- from ticket_outcomes_order_ref_idx in the window's days, newest first. Pending
-- tickets have no order reference yet, so none is found this way.
SELECT o.ticket_id::text AS id, o.received_at, o.status, left(o.error, %(error_chars)s) AS error,
       cardinality(o.warnings) AS warning_count, o.order_ref, o.duplicate_of::text AS duplicate_of
FROM ticket_outcomes AS o
WHERE o.order_ref = %(order_ref)s::text
  AND o.status = ANY(%(statuses)s::text[])
  AND o.received_at >= %(since)s::timestamptz AND o.received_at < %(until)s::timestamptz
  AND (%(after_id)s::uuid IS NULL
       OR (o.received_at, o.ticket_id) < (%(after_received_at)s::timestamptz, %(after_id)s::uuid))
ORDER BY o.received_at DESC, o.ticket_id DESC
LIMIT %(limit)s;

-- name: tickets_page_by_product
-- One page of GET /tickets with product_id (and any other filter): the tickets with a
-- line of that product, read from ticket_lines_product_received_idx in the window's
-- days (a ticket with the product on several lines once), newest first; then each
-- one's outcome by its key (LATERAL ... LIMIT 1: one index probe per ticket, in the
-- window's days only, stopping once the page is full). Only processed tickets have lines.
SELECT o.ticket_id::text AS id, o.received_at, o.status, left(o.error, %(error_chars)s) AS error,
       cardinality(o.warnings) AS warning_count, o.order_ref, o.duplicate_of::text AS duplicate_of
FROM (
    SELECT DISTINCT l.received_at, l.ticket_id
    FROM ticket_lines AS l
    WHERE l.product_id = %(product_id)s::text
      AND l.received_at >= %(since)s::timestamptz AND l.received_at < %(until)s::timestamptz
      AND (%(after_id)s::uuid IS NULL
           OR (l.received_at, l.ticket_id) < (%(after_received_at)s::timestamptz, %(after_id)s::uuid))
    ORDER BY l.received_at DESC, l.ticket_id DESC
) AS l
CROSS JOIN LATERAL (
    SELECT *
    FROM ticket_outcomes AS o
    WHERE o.ticket_id = l.ticket_id AND o.received_at = l.received_at
      AND o.received_at >= %(since)s::timestamptz AND o.received_at < %(until)s::timestamptz
      AND o.status = ANY(%(statuses)s::text[])
      AND (%(order_ref)s::text IS NULL OR o.order_ref = %(order_ref)s::text)
    LIMIT 1
) AS o
ORDER BY l.received_at DESC, l.ticket_id DESC
LIMIT %(limit)s;

-- name: tickets_page_walked
-- tickets_page's rows for a window of many days: migration 0008's function walks it
-- newest day first with one cached generic plan, rather than planning every day's
-- partitions on each call.
SELECT id, received_at, status, error, warning_count, order_ref, duplicate_of
FROM myticket_tickets_page(%(statuses)s::text[], %(since)s::timestamptz, %(until)s::timestamptz,
                           %(after_received_at)s::timestamptz, %(after_id)s::uuid, %(limit)s, %(error_chars)s);

-- name: tickets_page_by_order_ref_walked
-- tickets_page_by_order_ref's rows for a window of many days (see tickets_page_walked).
SELECT id, received_at, status, error, warning_count, order_ref, duplicate_of
FROM myticket_tickets_page_by_order_ref(%(order_ref)s::text, %(statuses)s::text[], %(since)s::timestamptz,
                                        %(until)s::timestamptz, %(after_received_at)s::timestamptz,
                                        %(after_id)s::uuid, %(limit)s, %(error_chars)s);

-- name: tickets_page_by_product_walked
-- tickets_page_by_product's rows for a window of many days (see tickets_page_walked).
SELECT id, received_at, status, error, warning_count, order_ref, duplicate_of
FROM myticket_tickets_page_by_product(%(product_id)s::text, %(order_ref)s::text, %(statuses)s::text[],
                                      %(since)s::timestamptz, %(until)s::timestamptz,
                                      %(after_received_at)s::timestamptz, %(after_id)s::uuid, %(limit)s,
                                      %(error_chars)s);

-- name: ticket_body
-- The exact stored bytes of one ticket and their Content-Type, for GET
-- /tickets/{id}/body; in the ticket's day partition when its id says which.
SELECT d.body, d.content_type
FROM deliveries AS d
WHERE d.id = %(id)s::uuid
  AND (%(received_at)s::timestamptz IS NULL OR d.received_at = %(received_at)s::timestamptz);
