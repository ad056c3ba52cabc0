-- name: synchronous_replication
-- Whether this session's commits wait for a synchronous standby: the primary's
-- synchronous_standby_names and this session's synchronous_commit, and the standbys
-- streaming as synchronous (sync or quorum). pg_stat_replication shows sync_state only
-- to a superuser or a member of pg_read_all_stats: `readable` says whether it did.
SELECT current_setting('synchronous_standby_names') AS standby_names,
       current_setting('synchronous_commit') AS synchronous_commit,
       pg_is_in_recovery() AS in_recovery,
       (SELECT count(*) FROM pg_stat_replication
        WHERE sync_state IN ('sync', 'quorum') AND state = 'streaming') AS synchronous_standbys,
       NOT EXISTS (SELECT 1 FROM pg_stat_replication WHERE sync_state IS NULL) AS readable;
