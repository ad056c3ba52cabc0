DROP FUNCTION myticket_drop_idempotency_key_partitions(date);
CREATE OR REPLACE FUNCTION myticket_create_day_partitions(day date) RETURNS integer
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
DROP TABLE idempotency_keys;
DROP INDEX ticket_lines_product_received_idx;
DROP INDEX ticket_outcomes_order_ref_idx;
DROP INDEX ticket_outcomes_status_received_idx;
