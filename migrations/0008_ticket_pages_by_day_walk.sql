-- GET /tickets over a window of many days without planning every day's partitions.
-- depends: 0007_digests_by_body

-- Why: the service's statements reach PostgreSQL with their parameters as literals, so a
-- window of one or two days is pruned to its days' partitions when planned, but a window
-- of 90 days plans 90 partitions of each table it reads on every call: 16 ms of planning
-- for a page by order reference, 30 ms by product, for about 1 ms of execution
-- (EXPLAIN ANALYZE, 90 filled days of 20,000 tickets).
--
-- Each function below answers one statement of sql/read.sql (tickets_page,
-- tickets_page_by_order_ref, tickets_page_by_product) with the same rows in the same
-- order, for windows wider than a couple of days (the repository chooses). PL/pgSQL
-- keeps each statement's plan for the session; plan_cache_mode = force_generic_plan
-- makes it one generic plan, whose partitions are pruned when it starts, with the
-- values of the call. The window is walked newest first in steps of UTC days: the newest
-- day alone, then one day, two, four... each step asking only for the rows the page
-- still lacks, until the page is full or the window is covered. A filter that fills a
-- page in its last day starts one day's index scans, not one per day kept; one that
-- matches a few tickets in the whole window takes about log2(days) steps.
--
-- The steps are disjoint ranges of received_at, newest first, and each returns its rows
-- in the page's order (received_at DESC, id DESC): their concatenation is the page the
-- single statement gives, and the next page's cursor is the same.

-- The lower end of step number `step` of the walk of [since, until), whose upper end is
-- the lower end of the step before (`until` for step 0); NULL once the window is covered.
-- Step 0 reaches down to the UTC midnight before its upper end, step n >= 1 covers
-- 2^(n-1) days more; none goes below `since` (nor out of timestamptz's range).
CREATE FUNCTION myticket_walk_step(since timestamptz, until timestamptz, previous_lower timestamptz, step integer)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN previous_lower <= since THEN NULL
        WHEN step = 0 THEN greatest(since, date_trunc('day', previous_lower - interval '1 microsecond', 'UTC'))
        WHEN previous_lower - since <= interval '24 hours' * 2 ^ (step - 1) THEN since
        ELSE previous_lower - interval '24 hours' * 2 ^ (step - 1)
    END
$$;

-- tickets_page of sql/read.sql: no order_ref nor product_id.
CREATE FUNCTION myticket_tickets_page(
    chosen_statuses text[], window_since timestamptz, window_until timestamptz,
    after_received_at timestamptz, after_id uuid, page_rows integer, error_chars integer)
RETURNS TABLE (id text, received_at timestamptz, status text, error text, warning_count integer,
               order_ref text, duplicate_of text)
LANGUAGE plpgsql STABLE
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
DECLARE
    upper_at  timestamptz := window_until;
    lower_at  timestamptz;
    step      integer := 0;
    remaining integer := page_rows;
    got       integer;
BEGIN
    LOOP
        lower_at := myticket_walk_step(window_since, window_until, upper_at, step);
        EXIT WHEN lower_at IS NULL OR remaining <= 0;
        RETURN QUERY
        SELECT chosen.id, chosen.received_at, chosen.status, chosen.error, chosen.warning_count,
               chosen.order_ref, chosen.duplicate_of
        FROM (
            (SELECT p.id::text AS id, p.received_at, 'pending' AS status, NULL::text AS error,
                    0 AS warning_count, NULL::text AS order_ref, NULL::text AS duplicate_of
             FROM pending_tickets AS p
             WHERE 'pending' = ANY(chosen_statuses)
               AND p.received_at >= lower_at AND p.received_at < upper_at
               AND (after_id IS NULL OR (p.received_at, p.id) < (after_received_at, after_id))
             ORDER BY p.received_at DESC, p.id DESC
             LIMIT remaining)
            UNION ALL
            (SELECT o.ticket_id::text, o.received_at, o.status, left(o.error, error_chars),
                    cardinality(o.warnings), o.order_ref, o.duplicate_of::text
             FROM ticket_outcomes AS o
             WHERE 'processed' = ANY(chosen_statuses) AND o.status = 'processed'
               AND o.received_at >= lower_at AND o.received_at < upper_at
               AND (after_id IS NULL OR (o.received_at, o.ticket_id) < (after_received_at, after_id))
             ORDER BY o.received_at DESC, o.ticket_id DESC
             LIMIT remaining)
            UNION ALL
            (SELECT o.ticket_id::text, o.received_at, o.status, left(o.error, error_chars),
                    cardinality(o.warnings), o.order_ref, o.duplicate_of::text
             FROM ticket_outcomes AS o
             WHERE 'rejected' = ANY(chosen_statuses) AND o.status = 'rejected'
               AND o.received_at >= lower_at AND o.received_at < upper_at
               AND (after_id IS NULL OR (o.received_at, o.ticket_id) < (after_received_at, after_id))
             ORDER BY o.received_at DESC, o.ticket_id DESC
             LIMIT remaining)
            UNION ALL
            (SELECT o.ticket_id::text, o.received_at, o.status, left(o.error, error_chars),
                    cardinality(o.warnings), o.order_ref, o.duplicate_of::text
             FROM ticket_outcomes AS o
             WHERE 'duplicate' = ANY(chosen_statuses) AND o.status = 'duplicate'
               AND o.received_at >= lower_at AND o.received_at < upper_at
               AND (after_id IS NULL OR (o.received_at, o.ticket_id) < (after_received_at, after_id))
             ORDER BY o.received_at DESC, o.ticket_id DESC
             LIMIT remaining)
        ) AS chosen
        ORDER BY chosen.received_at DESC, chosen.id DESC
        LIMIT remaining;
        GET DIAGNOSTICS got = ROW_COUNT;
        remaining := remaining - got;
        upper_at := lower_at;
        step := step + 1;
    END LOOP;
END
$$;

-- tickets_page_by_order_ref of sql/read.sql: order_ref given, product_id not.
CREATE FUNCTION myticket_tickets_page_by_order_ref(
    chosen_order_ref text, chosen_statuses text[], window_since timestamptz, window_until timestamptz,
    after_received_at timestamptz, after_id uuid, page_rows integer, error_chars integer)
RETURNS TABLE (id text, received_at timestamptz, status text, error text, warning_count integer,
               order_ref text, duplicate_of text)
LANGUAGE plpgsql STABLE
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
DECLARE
    upper_at  timestamptz := window_until;
    lower_at  timestamptz;
    step      integer := 0;
    remaining integer := page_rows;
    got       integer;
BEGIN
    LOOP
        lower_at := myticket_walk_step(window_since, window_until, upper_at, step);
        EXIT WHEN lower_at IS NULL OR remaining <= 0;
        RETURN QUERY
        SELECT o.ticket_id::text, o.received_at, o.status, left(o.error, error_chars),
               cardinality(o.warnings), o.order_ref, o.duplicate_of::text
        FROM ticket_outcomes AS o
        WHERE o.order_ref = chosen_order_ref
          AND o.status = ANY(chosen_statuses)
          AND o.received_at >= lower_at AND o.received_at < upper_at
          AND (after_id IS NULL OR (o.received_at, o.ticket_id) < (after_received_at, after_id))
        ORDER BY o.received_at DESC, o.ticket_id DESC
        LIMIT remaining;
        GET DIAGNOSTICS got = ROW_COUNT;
        remaining := remaining - got;
        upper_at := lower_at;
        step := step + 1;
    END LOOP;
END
$$;

-- tickets_page_by_product of sql/read.sql: product_id given (order_ref may be).
CREATE FUNCTION myticket_tickets_page_by_product(
    chosen_product_id text, chosen_order_ref text, chosen_statuses text[], window_since timestamptz,
    window_until timestamptz, after_received_at timestamptz, after_id uuid, page_rows integer, error_chars integer)
RETURNS TABLE (id text, received_at timestamptz, status text, error text, warning_count integer,
               order_ref text, duplicate_of text)
LANGUAGE plpgsql STABLE
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
DECLARE
    upper_at  timestamptz := window_until;
    lower_at  timestamptz;
    step      integer := 0;
    remaining integer := page_rows;
    got       integer;
BEGIN
    LOOP
        lower_at := myticket_walk_step(window_since, window_until, upper_at, step);
        EXIT WHEN lower_at IS NULL OR remaining <= 0;
        RETURN QUERY
        SELECT o.ticket_id::text, o.received_at, o.status, left(o.error, error_chars),
               cardinality(o.warnings), o.order_ref, o.duplicate_of::text
        FROM (
            SELECT DISTINCT l.received_at, l.ticket_id
            FROM ticket_lines AS l
            WHERE l.product_id = chosen_product_id
              AND l.received_at >= lower_at AND l.received_at < upper_at
              AND (after_id IS NULL OR (l.received_at, l.ticket_id) < (after_received_at, after_id))
            ORDER BY l.received_at DESC, l.ticket_id DESC
        ) AS l
        CROSS JOIN LATERAL (
            SELECT *
            FROM ticket_outcomes AS o
            WHERE o.ticket_id = l.ticket_id AND o.received_at = l.received_at
              AND o.received_at >= lower_at AND o.received_at < upper_at
              AND o.status = ANY(chosen_statuses)
              AND (chosen_order_ref IS NULL OR o.order_ref = chosen_order_ref)
            LIMIT 1
        ) AS o
        ORDER BY l.received_at DESC, l.ticket_id DESC
        LIMIT remaining;
        GET DIAGNOSTICS got = ROW_COUNT;
        remaining := remaining - got;
        upper_at := lower_at;
        step := step + 1;
    END LOOP;
END
$$;
