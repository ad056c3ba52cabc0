-- The duplicate look-up reads one index whatever the number of days kept.
-- depends: 0006_claim_lines_and_journal

-- Why: processed_bodies was partitioned by day, so looking a batch's digests up probed
-- every kept day's partition: on 90 days of 20,000 tickets, a batch of 480 digests was
-- sequential scans of all 91 partitions (412 ms), and PostgreSQL's CPU per processed
-- ticket grew eightfold. Now one table, keyed as before by (digest, day): a digest's
-- rows are one range of one index, probed once per digest, at 1 day as at 90.
--
-- A purged day can no longer take its digests with it by dropping a partition, and
-- deleting them in the purge would read the table while the day's partitions are
-- locked. Instead the purge notes the day in forgotten_digest_days (one row): from then
-- on the look-up ignores that day's digests, and the maintenance loop deletes them off
-- the hot path (sql/maintenance.sql: forget_purged_digests), and the note with them.

ALTER TABLE processed_bodies RENAME TO processed_bodies_by_day;
ALTER INDEX processed_bodies_pkey RENAME TO processed_bodies_by_day_pkey;

-- The first ticket processed with each body on each day kept (midnight UTC).
CREATE TABLE processed_bodies (
    body_sha256   bytea NOT NULL,
    received_day  timestamptz NOT NULL,
    ticket_id     uuid NOT NULL,
    PRIMARY KEY (body_sha256, received_day)
);

-- Rows arrive in day order: a block-range index finds a purged day's rows without
-- reading the whole table, and costs the inserts next to nothing (a B-tree on the day
-- would be one more index entry per ticket).
CREATE INDEX processed_bodies_day_ranges ON processed_bodies USING brin (received_day) WITH (autosummarize = on);

CREATE TABLE forgotten_digest_days (
    day  timestamptz PRIMARY KEY
);

INSERT INTO processed_bodies (body_sha256, received_day, ticket_id)
SELECT body_sha256, received_day, ticket_id
FROM processed_bodies_by_day
ORDER BY received_day, body_sha256;

DROP TABLE processed_bodies_by_day;

-- As in 0005, without processed_bodies among the day-partitioned tables. A day made
-- again after its purge (a restore) first loses what is left of its old digests, so
-- that none of them names a ticket the restore does not bring back.
CREATE OR REPLACE FUNCTION myticket_create_day_partitions(day date) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    parent   text;
    made     integer := 0;
    lower_at timestamptz := day::timestamp AT TIME ZONE 'UTC';
    upper_at timestamptz := (day + 1)::timestamp AT TIME ZONE 'UTC';
BEGIN
    PERFORM pg_advisory_xact_lock(4242017303);
    FOREACH parent IN ARRAY ARRAY['deliveries', 'ticket_outcomes', 'ticket_lines', 'idempotency_keys']
    LOOP
        IF to_regclass(parent || '_' || to_char(day, 'YYYYMMDD')) IS NULL THEN
            EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                           parent || '_' || to_char(day, 'YYYYMMDD'), parent, lower_at, upper_at);
            made := made + 1;
        END IF;
    END LOOP;
    IF made > 0 AND EXISTS (SELECT 1 FROM forgotten_digest_days AS f WHERE f.day = lower_at) THEN
        DELETE FROM processed_bodies AS b WHERE b.received_day = lower_at;
        DELETE FROM forgotten_digest_days AS f WHERE f.day = lower_at;
    END IF;
    RETURN made;
END
$$;

-- As in 0005, without processed_bodies among the partitions dropped: the day's digests
-- are forgotten by one row in forgotten_digest_days, in the same transaction.
CREATE OR REPLACE FUNCTION myticket_purge_day(day date, require_archive boolean) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    parent    text;
    parents   text[] := ARRAY['deliveries', 'ticket_outcomes', 'ticket_lines', 'idempotency_keys'];
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
    INSERT INTO forgotten_digest_days (day) VALUES (lower_at) ON CONFLICT DO NOTHING;
    RETURN 'purged';
END
$$;
