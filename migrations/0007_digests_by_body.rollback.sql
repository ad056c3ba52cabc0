-- Back to digests partitioned by day: each kept day gets its processed_bodies partition
-- again, with the digests of that day that are not forgotten; the functions are those
-- of 0005 again.
ALTER TABLE processed_bodies RENAME TO processed_bodies_by_body;
ALTER INDEX processed_bodies_pkey RENAME TO processed_bodies_by_body_pkey;

CREATE TABLE processed_bodies (
    body_sha256   bytea NOT NULL,
    received_day  timestamptz NOT NULL,
    ticket_id     uuid NOT NULL,
    PRIMARY KEY (body_sha256, received_day)
) PARTITION BY RANGE (received_day);

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

DO $$
BEGIN
    PERFORM myticket_create_day_partitions(to_date(right(c.relname, 8), 'YYYYMMDD'))
    FROM pg_inherits AS i
    JOIN pg_class AS c ON c.oid = i.inhrelid
    JOIN pg_class AS p ON p.oid = i.inhparent
    WHERE p.relname = 'deliveries' AND c.relname ~ '^deliveries_[0-9]{8}$';
END
$$;

INSERT INTO processed_bodies (body_sha256, received_day, ticket_id)
SELECT b.body_sha256, b.received_day, b.ticket_id
FROM processed_bodies_by_body AS b
WHERE NOT EXISTS (SELECT 1 FROM forgotten_digest_days AS f WHERE f.day = b.received_day)
  AND to_regclass('processed_bodies_' || to_char(b.received_day AT TIME ZONE 'UTC', 'YYYYMMDD')) IS NOT NULL;

DROP TABLE processed_bodies_by_body;
DROP TABLE forgotten_digest_days;
