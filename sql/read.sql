-- name: ticket_by_id
-- One ticket's delivery and processing result, for GET /tickets/{id}.
SELECT id::text, status, received_at, content_type, octet_length(body), processed_at,
       order_ref, vat, total, headers, warnings, error, text_encoding, duplicate_of::text, attempts
FROM tickets
WHERE id = %(id)s::uuid;

-- name: lines_of_ticket
-- A processed ticket's lines in their order on the ticket.
SELECT line_number, product_id, name, price
FROM ticket_lines
WHERE ticket_id = %(id)s::uuid
ORDER BY line_number;

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
