-- Queries of bench/digest_lookup.py: the duplicate look-up as it was (digests in day
-- partitions) beside the shipped one, on the same digests.

-- name: make_by_day_table
-- The digest table before migration 0007: one partition per day.
CREATE TABLE bench_bodies_by_day (
    body_sha256   bytea NOT NULL,
    received_day  timestamptz NOT NULL,
    ticket_id     uuid NOT NULL,
    PRIMARY KEY (body_sha256, received_day)
) PARTITION BY RANGE (received_day);

-- name: make_by_day_partitions
-- One partition of bench_bodies_by_day per day, as myticket_create_day_partitions made them.
CREATE OR REPLACE FUNCTION pg_temp.bench_day_partitions(first_day date, days integer) RETURNS integer
LANGUAGE plpgsql AS $$
BEGIN
    FOR n IN 0 .. days - 1 LOOP
        EXECUTE format('CREATE TABLE %%I PARTITION OF bench_bodies_by_day FOR VALUES FROM (%%L) TO (%%L)',
                       'bench_bodies_by_day_' || n, (first_day + n)::timestamp AT TIME ZONE 'UTC',
                       (first_day + n + 1)::timestamp AT TIME ZONE 'UTC');
    END LOOP;
    RETURN days;
END
$$;
SELECT pg_temp.bench_day_partitions(%(first_day)s::date, %(days)s);

-- name: fill_days
-- days x per_day digests, day by day, into both tables (the shipped one unpartitioned).
INSERT INTO processed_bodies (body_sha256, received_day, ticket_id)
SELECT sha256(('digest ' || n)::bytea), %(first_day)s::timestamptz + (n / %(per_day)s) * interval '1 day',
       gen_random_uuid()
FROM generate_series(0, %(days)s * %(per_day)s - 1) AS n;
INSERT INTO bench_bodies_by_day SELECT * FROM processed_bodies;

-- name: vacuum_processed_bodies
VACUUM ANALYZE processed_bodies;

-- name: vacuum_bodies_by_day
VACUUM ANALYZE bench_bodies_by_day;

-- name: first_tickets_by_day
-- The look-up before migration 0007, as the worker ran it.
SELECT DISTINCT ON (body_sha256) body_sha256, ticket_id::text AS ticket_id
FROM bench_bodies_by_day
WHERE body_sha256 = ANY(%(digests)s::bytea[])
ORDER BY body_sha256, received_day;

-- name: reset
DROP TABLE IF EXISTS bench_bodies_by_day;
TRUNCATE processed_bodies, forgotten_digest_days;

-- name: forget_day
INSERT INTO forgotten_digest_days (day) VALUES (%(day)s);
