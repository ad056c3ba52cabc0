-- Processing results: the parsed ticket, its lines, and the product catalogue.
-- depends: 0001_tickets

ALTER TABLE tickets
    ADD COLUMN order_ref     text,
    ADD COLUMN vat           numeric(12,2),
    ADD COLUMN total         numeric(12,2),
    ADD COLUMN headers       jsonb,
    ADD COLUMN warnings      text[] NOT NULL DEFAULT '{}',
    ADD COLUMN error         text,
    ADD COLUMN text_encoding text,
    ADD COLUMN processed_at  timestamptz,
    -- Failed processing attempts (unexpected errors, not parse rejections).
    ADD COLUMN attempts      integer NOT NULL DEFAULT 0,
    ADD COLUMN body_sha256   bytea,
    ADD COLUMN duplicate_of  uuid,
    ADD CONSTRAINT tickets_status_check
        CHECK (status IN ('pending', 'processed', 'rejected', 'duplicate'));

CREATE INDEX tickets_status_received_idx ON tickets (status, received_at);

-- The lines of each processed ticket, with the price on that ticket.
CREATE TABLE ticket_lines (
    ticket_id    uuid NOT NULL REFERENCES tickets (id) ON DELETE CASCADE,
    line_number  integer NOT NULL,
    product_id   text NOT NULL,
    name         text NOT NULL,
    price        numeric(12,2) NOT NULL,
    PRIMARY KEY (ticket_id, line_number)
);

CREATE INDEX ticket_lines_product_idx ON ticket_lines (product_id);

-- The catalogue: name and price come from the most recently received ticket
-- containing the product, whatever order tickets are processed in.
CREATE TABLE products (
    product_id       text PRIMARY KEY,
    name             text NOT NULL,
    price            numeric(12,2) NOT NULL,
    first_seen_at    timestamptz NOT NULL,
    last_seen_at     timestamptz NOT NULL,
    -- tickets.seq of that most recent ticket: breaks ties between equal received_at.
    last_ticket_seq  bigint NOT NULL,
    -- Processed tickets containing the product.
    times_seen       bigint NOT NULL
);

-- One row per distinct body that was processed: a later identical body (a sender's
-- retry, hey's repeated body) is a duplicate. The primary key makes two workers
-- racing on the same bytes agree on which ticket came first.
CREATE TABLE processed_bodies (
    body_sha256  bytea PRIMARY KEY,
    ticket_id    uuid NOT NULL REFERENCES tickets (id) ON DELETE CASCADE
);
