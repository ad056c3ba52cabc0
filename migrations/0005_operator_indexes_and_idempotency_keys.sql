-- What GET /tickets filters by, and the idempotency keys of POST /ticket.
-- depends: 0004_write_once_day_partitions

-- GET /tickets reads tickets newest first within a reception window, by status, by
-- order reference or by product. Each index below serves one filter, ordered as the
-- answer is, and, being partitioned like its table, is read only in the window's days.
-- Each is one more index entry the worker writes per row (not on the ingest path):
--   status:     one entry per outcome (every processed ticket);          ~107 bytes/ticket
--   order_ref:  one per outcome that has an order reference (partial);   ~92 bytes/ticket
--   product_id: one per ticket line, the most (3.4 lines per ticket);    ~227 bytes/ticket
-- Together about a tenth of PostgreSQL's CPU per processed ticket (bench/search_index_cost.py).
-- Pending tickets need none: pending_tickets' key is (received_at, id) already.
CREATE INDEX ticket_outcomes_status_received_idx ON ticket_outcomes (status, received_at, ticket_id);
CREATE INDEX ticket_outcomes_order_ref_idx ON ticket_outcomes (order_ref, received_at, ticket_id)
    WHERE order_ref IS NOT NULL;
CREATE INDEX ticket_lines_product_received_idx ON ticket_lines (product_id, received_at, ticket_id);

-- Idempotency-Key (and Standard Webhooks' webhook-id) of POST /ticket: the key, the
-- digest of the body first sent with it, and the ticket it was stored as. Day
-- partitions by the day the key was first used; they go by DROP once older than the
-- keys' lifetime (MYTICKET_IDEMPOTENCY_KEY_HOURS), never by DELETE. The key is unique
-- within a day (the partition key must be in the primary key); a look-up takes the
-- earliest use within the lifetime.
CREATE TABLE idempotency_keys (
    key           text NOT NULL,
    used_day      timestamptz NOT NULL,
    body_sha256   bytea NOT NULL,
    ticket_id     uuid NOT NULL,
    received_at   timestamptz NOT NULL,
    PRIMARY KEY (key, used_day)
) PARTITION BY RANGE (used_day);

-- As in 0004, with idempotency_keys among the day-partitioned tables: a day that gets
-- its ticket partitions gets its key partition too.
CREATE OR REPLACE FUNCTION myticket_create_day_partitions(day date) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    parent   text;
    made     integer := 0;
    lower_at timestamptz := day::timestamp AT TIME ZONE 'UTC';
    upper_at timestamptz := (day + 1)::timestamp AT TIME ZONE 'UTC';
BEGIN
    PERFORM pg_advisory_xact_lock(4242017303);
    FOREACH parent IN ARRAY ARRAY['deliveries', 'ticket_outcomes', 'ticket_lines', 'processed_bodies',
                                  'idempotency_keys']
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

-- As in 0004, and a purged day's keys go with its tickets: a key never names a ticket
-- that is gone. (Keys also go by their own, shorter, lifetime: below.)
CREATE OR REPLACE FUNCTION myticket_purge_day(day date, require_archive boolean) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    parent    text;
    parents   text[] := ARRAY['deliveries', 'ticket_outcomes', 'ticket_lines', 'processed_bodies',
                              'idempotency_keys'];
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

-- Drops the idempotency_keys partitions of the days before `before`; returns how many.
-- Under the same advisory lock as the partitions' creation.
CREATE FUNCTION myticket_drop_idempotency_key_partitions(before date) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    partition_name text;
    dropped        integer := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(4242017303);
    FOR partition_name IN
        SELECT child.relname
        FROM pg_inherits AS i
        JOIN pg_class AS child ON child.oid = i.inhrelid
        JOIN pg_class AS parent ON parent.oid = i.inhparent
        WHERE parent.relname = 'idempotency_keys'
          AND child.relname ~ '^idempotency_keys_[0-9]{8}$'
          AND to_date(right(child.relname, 8), 'YYYYMMDD') < before
        ORDER BY 1
    LOOP
        EXECUTE format('DROP TABLE %I', partition_name);
        dropped := dropped + 1;
    END LOOP;
    RETURN dropped;
END
$$;

-- The key partitions of the days that have ticket partitions already.
DO $$
BEGIN
    PERFORM myticket_create_day_partitions(to_date(right(c.relname, 8), 'YYYYMMDD'))
    FROM pg_inherits AS i
    JOIN pg_class AS c ON c.oid = i.inhrelid
    JOIN pg_class AS p ON p.oid = i.inhparent
    WHERE p.relname = 'deliveries' AND c.relname ~ '^deliveries_[0-9]{8}$';
END
$$;
