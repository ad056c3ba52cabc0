-- name: insert_ticket_row
-- A delivery written by another session: left uncommitted, it makes an INSERT of the
-- same delivery (id and reception time) wait for that session's transaction.
INSERT INTO deliveries (id, received_at, body) VALUES (%(id)s, %(received_at)s, '\x00'::bytea);

-- name: ticket_body_sizes
-- The size of every stored body.
SELECT octet_length(body) FROM deliveries;
