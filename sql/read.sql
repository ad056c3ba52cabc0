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
