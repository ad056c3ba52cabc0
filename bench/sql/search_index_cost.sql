-- name: postmaster_pid
-- This session's server process, whose parent is the server's main process: the
-- measurement reads the CPU of that whole tree (the worker's pooled backends among them).
SELECT pg_backend_pid();

-- name: empty_ticket_tables
-- A fresh start for each variant.
TRUNCATE deliveries, pending_tickets, ticket_outcomes, ticket_lines, processed_bodies, forgotten_digest_days, products, idempotency_keys;

-- name: drop_search_indexes
-- Variant: without the three indexes of GET /tickets (migration 0005).
DROP INDEX ticket_outcomes_status_received_idx, ticket_outcomes_order_ref_idx, ticket_lines_product_received_idx;

-- name: add_search_indexes
-- Puts them back, as migration 0005 makes them.
CREATE INDEX ticket_outcomes_status_received_idx ON ticket_outcomes (status, received_at, ticket_id);
CREATE INDEX ticket_outcomes_order_ref_idx ON ticket_outcomes (order_ref, received_at, ticket_id)
    WHERE order_ref IS NOT NULL;
CREATE INDEX ticket_lines_product_received_idx ON ticket_lines (product_id, received_at, ticket_id);

-- name: search_index_bytes
-- The bytes of each search index over all its partitions.
SELECT i.name, coalesce(sum(pg_relation_size(t.relid)), 0)::bigint AS bytes
FROM unnest(ARRAY['ticket_outcomes_status_received_idx', 'ticket_outcomes_order_ref_idx',
                  'ticket_lines_product_received_idx']) AS i (name)
LEFT JOIN LATERAL pg_partition_tree(i.name::regclass) AS t ON true
GROUP BY i.name ORDER BY i.name;
