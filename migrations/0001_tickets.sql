-- Every delivery to POST /ticket, stored before it is acknowledged.
-- depends:

CREATE TABLE tickets (
    -- The public delivery id answered to the sender.
    id            uuid PRIMARY KEY,
    -- Insertion order: ties between equal received_at values, and the worker's queue order.
    seq           bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    received_at   timestamptz NOT NULL,
    content_type  text,
    -- The exact bytes of the request body: bytea, never text (not all bodies are UTF-8).
    body          bytea NOT NULL,
    status        text NOT NULL DEFAULT 'pending'
);

CREATE INDEX tickets_pending_idx ON tickets (seq) WHERE status = 'pending';
