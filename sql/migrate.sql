-- name: take_migration_lock
-- Waits (up to the given lock_timeout) for the session-level advisory lock that
-- serialises migrations. It is released when this session ends, even by a kill -9
-- of its process, unlike yoyo's lock row.
SELECT set_config('lock_timeout', %(timeout)s, false), pg_advisory_lock(4242017302);

-- name: migration_lock_rows
-- yoyo's lock rows. Read while holding the advisory lock: no live migrator holds
-- yoyo's lock then, so any row is stale (left by a migrator that died).
SELECT pid, ctime FROM yoyo_lock;
