-- name: ticket_by_id
-- One ticket's delivery and processing result, for GET /tickets/{id}, with how many
-- lines it has (counted from the primary key's index; the lines come by pages).
SELECT t.id::text AS id, t.status, t.received_at, t.content_type, octet_length(t.body) AS body_bytes,
       t.processed_at, t.order_ref, t.vat, t.total, t.headers, t.warnings, t.error, t.text_encoding,
       t.duplicate_of::text AS duplicate_of, t.attempts,
       (SELECT count(*) FROM ticket_lines AS l WHERE l.ticket_id = t.id) AS line_count
FROM tickets AS t
WHERE t.id = %(id)s::uuid;

-- name: lines_of_ticket
-- One page of a processed ticket's lines in their order on the ticket, keyset-paginated
-- by line_number (the primary key's index). The caller asks for one row more than the
-- page holds, to know whether a next page exists.
SELECT line_number, product_id, name, price
FROM ticket_lines
WHERE ticket_id = %(id)s::uuid AND line_number > %(after)s
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
