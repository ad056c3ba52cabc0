-- Back to one `tickets` table, with the data: every ticket keeps its id, bytes, status,
-- parse results and lines. Days already purged are not in the database any more, so
-- they do not come back (restore them first, with `myticket restore`, if they must).
ALTER TABLE ticket_lines RENAME TO ticket_lines_by_day;
ALTER INDEX ticket_lines_pkey RENAME TO ticket_lines_by_day_pkey;
ALTER TABLE processed_bodies RENAME TO processed_bodies_by_day;
ALTER INDEX processed_bodies_pkey RENAME TO processed_bodies_by_day_pkey;

CREATE TABLE tickets (
    id            uuid PRIMARY KEY,
    seq           bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    received_at   timestamptz NOT NULL,
    content_type  text,
    body          bytea NOT NULL,
    status        text NOT NULL DEFAULT 'pending',
    order_ref     text,
    vat           numeric(12,2),
    total         numeric(12,2),
    headers       jsonb,
    warnings      text[] NOT NULL DEFAULT '{}',
    error         text,
    text_encoding text,
    processed_at  timestamptz,
    attempts      integer NOT NULL DEFAULT 0,
    body_sha256   bytea,
    duplicate_of  uuid,
    CONSTRAINT tickets_status_check CHECK (status IN ('pending', 'processed', 'rejected', 'duplicate'))
);

-- seq follows reception order, as it did when it was assigned at insertion.
INSERT INTO tickets (id, received_at, content_type, body, status, order_ref, vat, total, headers, warnings,
                     error, text_encoding, processed_at, attempts, body_sha256, duplicate_of)
SELECT d.id, d.received_at, d.content_type, d.body, coalesce(o.status, 'pending'), o.order_ref, o.vat, o.total,
       o.headers, coalesce(o.warnings, '{}'), o.error, o.text_encoding, o.processed_at,
       coalesce(o.attempts, p.attempts, 0), o.body_sha256, o.duplicate_of
FROM deliveries AS d
LEFT JOIN ticket_outcomes AS o ON o.ticket_id = d.id AND o.received_at = d.received_at
LEFT JOIN pending_tickets AS p ON p.id = d.id AND p.received_at = d.received_at
ORDER BY d.received_at, d.id;

CREATE INDEX tickets_pending_idx ON tickets (seq) WHERE status = 'pending';
CREATE INDEX tickets_status_received_idx ON tickets (status, received_at);

CREATE TABLE ticket_lines (
    ticket_id    uuid NOT NULL,
    line_number  integer NOT NULL,
    product_id   text NOT NULL,
    name         text NOT NULL,
    price        numeric(12,2) NOT NULL,
    PRIMARY KEY (ticket_id, line_number)
);
INSERT INTO ticket_lines (ticket_id, line_number, product_id, name, price)
SELECT ticket_id, line_number, product_id, name, price FROM ticket_lines_by_day;
CREATE INDEX ticket_lines_product_idx ON ticket_lines (product_id);

-- One digest per body: where two days both hold one, the earlier day's ticket was first.
CREATE TABLE processed_bodies (
    body_sha256  bytea PRIMARY KEY,
    ticket_id    uuid NOT NULL
);
INSERT INTO processed_bodies (body_sha256, ticket_id)
SELECT DISTINCT ON (body_sha256) body_sha256, ticket_id
FROM processed_bodies_by_day
ORDER BY body_sha256, received_day, ticket_id;

ALTER TABLE products ADD COLUMN last_ticket_seq bigint;
UPDATE products AS p SET last_ticket_seq = t.seq FROM tickets AS t WHERE t.id = p.last_ticket_id;
UPDATE products SET last_ticket_seq = 0 WHERE last_ticket_seq IS NULL;
ALTER TABLE products ALTER COLUMN last_ticket_seq SET NOT NULL, DROP COLUMN last_ticket_id;

DROP FUNCTION myticket_purge_day(date, boolean);
DROP FUNCTION myticket_create_day_partitions(date);
DROP TABLE archived_days;
DROP TABLE processed_bodies_by_day;
DROP TABLE ticket_lines_by_day;
DROP TABLE ticket_outcomes;
DROP TABLE pending_tickets;
DROP TABLE deliveries;
