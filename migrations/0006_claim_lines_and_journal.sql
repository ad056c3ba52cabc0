-- A worker claim bounded by what parsing holds (lines), and claims journalled so that a
-- ticket whose processing kills the worker is counted and, at the bound, rejected.
-- depends: 0005_operator_indexes_and_idempotency_keys

-- Why: a claim was bounded by body bytes only, but parsing holds about 1.3-1.7 kB per
-- line: twelve 50,000-line tickets (8 MiB of bodies) took the worker to 0.94 GB. And a
-- ticket that killed the worker process (out of memory) was never charged an attempt:
-- the claim's transaction died with the process, so the killer and every ticket behind
-- it stayed pending forever.

-- The lines of a body as the parser splits them (\r\n, \r or \n), give or take one:
-- the most of its \n and \r bytes, plus one. In SQL for the rows written by SQL alone
-- (requeue, restore, this migration); ingest counts the same in Python
-- (myticket.core.processing.body_lines). Escape encoding leaves both bytes as they are.
CREATE FUNCTION myticket_body_lines(body bytea) RETURNS integer
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$
    SELECT greatest(length(e) - length(replace(e, E'\n', '')), length(e) - length(replace(e, E'\r', ''))) + 1
    FROM encode(body, 'escape') AS e
$$;

ALTER TABLE pending_tickets ADD COLUMN body_lines integer;
UPDATE pending_tickets AS p SET body_lines = myticket_body_lines(d.body)
FROM deliveries AS d WHERE d.id = p.id AND d.received_at = p.received_at;
-- No default: a path that queues a ticket without counting its lines fails loudly
-- instead of letting a 50,000-line body pass as a line of zero cost.
ALTER TABLE pending_tickets ALTER COLUMN body_lines SET NOT NULL;

-- One row per claim being processed, committed (outside the claim's transaction) before
-- the worker parses anything, and deleted by the transaction that writes the claim's
-- outcomes. A row whose transaction is no longer in progress (pg_xact_status) belongs to
-- a claim that ended without committing: its worker died (or lost its connection while
-- failing). Its tickets are then claimed one at a time; a one-ticket claim left that
-- way counts as one death of the worker against its ticket.
-- UNLOGGED: a transaction that writes only here commits without waiting for a WAL flush
-- (the journal's INSERT is one such commit per claim: an fsync per claim otherwise). Its
-- rows matter only while the server that holds the claims' transactions runs: a server
-- crash empties it, and ends those claims anyway (their deaths are then not charged).
CREATE UNLOGGED TABLE worker_claims (
    xact_id      xid8 PRIMARY KEY,
    ids          uuid[] NOT NULL,
    received_at  timestamptz[] NOT NULL,
    claimed_at   timestamptz NOT NULL DEFAULT now()
);
