-- Write-once raw tickets in day partitions; processing state in rows of its own.
-- depends: 0003_no_row_by_row_foreign_keys

-- Why: `tickets` held the body and the processing state in one row, so every processed
-- ticket was written twice (the worker's UPDATE was not HOT: status was indexed) and
-- left a dead copy of its row for vacuum, and old tickets could only go by DELETE.
-- Now the body is inserted once into `deliveries` and never touched again; what the
-- worker decides is inserted into `ticket_outcomes`; the queue of pending tickets is a
-- small table of its own. Everything that belongs to a ticket is range-partitioned by
-- its reception time, one partition per UTC day, so old days go by DROP, not DELETE.
-- There is no DEFAULT partition: it would have to be scanned on every new partition
-- and blocks detaching. Partitions are made by myticket_create_day_partitions().

-- The previous tables stay until their data is copied; their names are freed now.
ALTER TABLE ticket_lines RENAME TO ticket_lines_previous;
ALTER INDEX ticket_lines_pkey RENAME TO ticket_lines_previous_pkey;
ALTER TABLE processed_bodies RENAME TO processed_bodies_previous;
ALTER INDEX processed_bodies_pkey RENAME TO processed_bodies_previous_pkey;

-- The exact bytes of every delivery, inserted once and never updated or deleted row by
-- row. The id is a UUIDv7 carrying received_at to the millisecond (tickets from before
-- this migration keep their random ids); the primary key must hold the partition key.
CREATE TABLE deliveries (
    id            uuid NOT NULL,
    received_at   timestamptz NOT NULL,
    content_type  text,
    body          bytea NOT NULL,
    PRIMARY KEY (id, received_at)
) PARTITION BY RANGE (received_at);

-- Tickets the worker has still to process, in reception order. Inserted with the
-- delivery, deleted in the transaction that writes the outcome. `body_bytes` lets a
-- claim stay within its byte budget without reading bodies; `attempts` counts
-- unexpected failures (an UPDATE here is HOT: no indexed column changes).
CREATE TABLE pending_tickets (
    received_at  timestamptz NOT NULL,
    id           uuid NOT NULL,
    body_bytes   integer NOT NULL,
    attempts     integer NOT NULL DEFAULT 0,
    PRIMARY KEY (received_at, id)
);

-- What processing decided for each ticket that is no longer pending.
CREATE TABLE ticket_outcomes (
    ticket_id      uuid NOT NULL,
    received_at    timestamptz NOT NULL,
    status         text NOT NULL CHECK (status IN ('processed', 'rejected', 'duplicate')),
    processed_at   timestamptz NOT NULL DEFAULT now(),
    attempts       integer NOT NULL DEFAULT 0,
    order_ref      text,
    vat            numeric(12,2),
    total          numeric(12,2),
    headers        jsonb,
    warnings       text[] NOT NULL DEFAULT '{}',
    error          text,
    text_encoding  text,
    body_sha256    bytea,
    duplicate_of   uuid,
    PRIMARY KEY (ticket_id, received_at)
) PARTITION BY RANGE (received_at);

-- The lines of processed tickets, in their ticket's day. The key serves the paged read
-- of one ticket's lines (ticket_id, then line_number); no other index is kept, as no
-- query looks lines up by product.
CREATE TABLE ticket_lines (
    ticket_id    uuid NOT NULL,
    received_at  timestamptz NOT NULL,
    line_number  integer NOT NULL,
    product_id   text NOT NULL,
    name         text NOT NULL,
    price        numeric(12,2) NOT NULL,
    PRIMARY KEY (ticket_id, line_number, received_at)
) PARTITION BY RANGE (received_at);

-- One row per distinct body processed, in the day of the ticket that was first with it:
-- a later identical body is a duplicate of that ticket. The key holds the day (midnight
-- UTC) rather than the exact time, so that two workers racing on the same bytes of the
-- same day collide on it and agree on which came first. A day's digests go with the
-- day's tickets: duplicates are recognised for as long as the original is kept.
CREATE TABLE processed_bodies (
    body_sha256   bytea NOT NULL,
    received_day  timestamptz NOT NULL,
    ticket_id     uuid NOT NULL,
    PRIMARY KEY (body_sha256, received_day)
) PARTITION BY RANGE (received_day);

-- Days written to an archive by `myticket archive`: purge drops a day only when its
-- archive holds every ticket the day holds, none of them pending.
CREATE TABLE archived_days (
    day          date PRIMARY KEY,
    tickets      bigint NOT NULL,
    pending      bigint NOT NULL,
    file_name    text NOT NULL,
    sha256       text NOT NULL,
    directory    text NOT NULL,
    archived_at  timestamptz NOT NULL DEFAULT now()
);

-- The partition of each day-partitioned table for one UTC day, made if missing. Safe
-- to call from several processes at once (they queue on an advisory lock), and cheap
-- when the day exists. Returns how many partitions it made.
CREATE FUNCTION myticket_create_day_partitions(day date) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    parent   text;
    made     integer := 0;
    lower_at timestamptz := day::timestamp AT TIME ZONE 'UTC';
    upper_at timestamptz := (day + 1)::timestamp AT TIME ZONE 'UTC';
BEGIN
    PERFORM pg_advisory_xact_lock(4242017303);
    FOREACH parent IN ARRAY ARRAY['deliveries', 'ticket_outcomes', 'ticket_lines', 'processed_bodies']
    LOOP
        IF to_regclass(parent || '_' || to_char(day, 'YYYYMMDD')) IS NULL THEN
            EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                           parent || '_' || to_char(day, 'YYYYMMDD'), parent, lower_at, upper_at);
            made := made + 1;
        END IF;
    END LOOP;
    RETURN made;
END
$$;

-- Drops one day's partitions of every day-partitioned table, in the caller's
-- transaction, so that a crash leaves the whole day or none of it. The day's four
-- partitions are locked first, before any parent table: while the purge waits for one
-- of them (a long report reading an old day), nothing that ingest needs is held. Then
-- no ticket can land in the day between the checks and the drop. Refuses (returning
-- why, dropping nothing) a day with pending tickets, and, when require_archive, a day
-- holding tickets that its archive does not hold all of. A day holding no ticket has
-- nothing to lose and goes either way.
CREATE FUNCTION myticket_purge_day(day date, require_archive boolean) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    parent    text;
    parents   text[] := ARRAY['deliveries', 'ticket_outcomes', 'ticket_lines', 'processed_bodies'];
    suffix    text := to_char(day, 'YYYYMMDD');
    lower_at  timestamptz := day::timestamp AT TIME ZONE 'UTC';
    upper_at  timestamptz := (day + 1)::timestamp AT TIME ZONE 'UTC';
    pending   bigint;
    stored    bigint;
    archive   archived_days%ROWTYPE;
BEGIN
    FOREACH parent IN ARRAY parents LOOP
        IF to_regclass(parent || '_' || suffix) IS NOT NULL THEN
            EXECUTE format('LOCK TABLE %I IN ACCESS EXCLUSIVE MODE', parent || '_' || suffix);
        END IF;
    END LOOP;
    PERFORM pg_advisory_xact_lock(4242017303);
    IF to_regclass('deliveries_' || suffix) IS NULL THEN
        RETURN 'absent';
    END IF;
    SELECT count(*) INTO pending FROM pending_tickets WHERE received_at >= lower_at AND received_at < upper_at;
    IF pending > 0 THEN
        RETURN format('pending: %s tickets of this day are not processed yet', pending);
    END IF;
    EXECUTE format('SELECT count(*) FROM %I', 'deliveries_' || suffix) INTO stored;
    IF require_archive AND stored > 0 THEN
        SELECT * INTO archive FROM archived_days AS a WHERE a.day = myticket_purge_day.day;
        IF NOT FOUND THEN
            RETURN 'not archived';
        END IF;
        IF archive.pending > 0 OR archive.tickets <> stored THEN
            RETURN format('archive outdated: it holds %s tickets (%s pending then), the day holds %s',
                          archive.tickets, archive.pending, stored);
        END IF;
    END IF;
    FOREACH parent IN ARRAY parents LOOP
        IF to_regclass(parent || '_' || suffix) IS NOT NULL THEN
            EXECUTE format('ALTER TABLE %I DETACH PARTITION %I', parent, parent || '_' || suffix);
            EXECUTE format('DROP TABLE %I', parent || '_' || suffix);
        END IF;
    END LOOP;
    RETURN 'purged';
END
$$;

-- The days present before this migration, and today and the next two days. (A DO
-- block, as yoyo prints the rows of a SELECT.)
DO $$
BEGIN
    PERFORM myticket_create_day_partitions(day)
    FROM (
        SELECT DISTINCT (received_at AT TIME ZONE 'UTC')::date AS day FROM tickets
        UNION
        SELECT (now() AT TIME ZONE 'UTC')::date + offset_days FROM generate_series(0, 2) AS offset_days
    ) AS days;
END
$$;

-- The data of the previous schema, every ticket with its id, bytes, status and lines.
INSERT INTO deliveries (id, received_at, content_type, body)
SELECT id, received_at, content_type, body FROM tickets;

INSERT INTO pending_tickets (received_at, id, body_bytes, attempts)
SELECT received_at, id, octet_length(body), attempts FROM tickets WHERE status = 'pending';

INSERT INTO ticket_outcomes (ticket_id, received_at, status, processed_at, attempts, order_ref, vat, total,
                             headers, warnings, error, text_encoding, body_sha256, duplicate_of)
SELECT id, received_at, status, coalesce(processed_at, received_at), attempts, order_ref, vat, total,
       headers, warnings, error, text_encoding, body_sha256, duplicate_of
FROM tickets WHERE status <> 'pending';

INSERT INTO ticket_lines (ticket_id, received_at, line_number, product_id, name, price)
SELECT l.ticket_id, t.received_at, l.line_number, l.product_id, l.name, l.price
FROM ticket_lines_previous AS l JOIN tickets AS t ON t.id = l.ticket_id;

INSERT INTO processed_bodies (body_sha256, received_day, ticket_id)
SELECT b.body_sha256, date_trunc('day', t.received_at, 'UTC'), b.ticket_id
FROM processed_bodies_previous AS b JOIN tickets AS t ON t.id = b.ticket_id;

-- The catalogue's tie-break between tickets received at the same instant was the
-- insertion sequence; it is now the ticket id (time-ordered for new tickets).
ALTER TABLE products ADD COLUMN last_ticket_id uuid;
UPDATE products AS p SET last_ticket_id = t.id FROM tickets AS t WHERE t.seq = p.last_ticket_seq;
-- A catalogue entry whose ticket is gone (none is deleted by the service) keeps the nil id.
UPDATE products SET last_ticket_id = '00000000-0000-0000-0000-000000000000' WHERE last_ticket_id IS NULL;
ALTER TABLE products ALTER COLUMN last_ticket_id SET NOT NULL, DROP COLUMN last_ticket_seq;

DROP TABLE processed_bodies_previous;
DROP TABLE ticket_lines_previous;
DROP TABLE tickets;
