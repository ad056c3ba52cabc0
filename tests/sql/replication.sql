-- name: require_synchronous_standby
-- Every commit waits for one standby to have flushed it (any standby's name matches).
ALTER SYSTEM SET synchronous_standby_names = '*';

-- name: reset_synchronous_standby_names
-- What a failover manager does on a promoted standby left alone: commits stop waiting.
ALTER SYSTEM RESET synchronous_standby_names;

-- name: make_read_only
-- A demoted primary: new transactions are read-only (a reload reaches open sessions).
ALTER SYSTEM SET default_transaction_read_only = on;

-- name: make_writable
ALTER SYSTEM RESET default_transaction_read_only;

-- name: reload_configuration
SELECT pg_reload_conf();

-- name: synchronous_standbys
-- Standbys streaming from this server whose flush every commit waits for.
SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync' AND state = 'streaming';

-- name: in_recovery
SELECT pg_is_in_recovery();

-- name: count_pending_tickets
-- Tickets stored and not processed yet.
SELECT count(*) FROM pending_tickets;

-- name: pause_replay
-- The standby stops applying WAL (it still receives it): a replica lagging behind.
SELECT pg_wal_replay_pause();

-- name: replay_pause_state
SELECT pg_get_wal_replay_pause_state();

-- name: resume_replay
SELECT pg_wal_replay_resume();
