-- name: insert_ticket_row
-- A delivery written by another session: left uncommitted, it makes an INSERT of the
-- same id wait for that session's transaction.
INSERT INTO tickets (id, received_at, body) VALUES (%(id)s, now(), '\x00'::bytea);

-- name: ticket_body_sizes
-- The size of every stored body.
SELECT octet_length(body) FROM tickets;
