-- name: session_state
-- What the server says of the session just opened on it, for target_session_attrs: a
-- server in recovery is a standby; transaction_read_only is on there and on a primary
-- made read-only (default_transaction_read_only), which cannot take a ticket either.
SELECT pg_is_in_recovery() AS in_recovery,
       current_setting('transaction_read_only') = 'on' AS read_only;
