-- name: applied_migrations
-- The yoyo migration ids applied to this database, for the readiness check.
SELECT migration_id FROM _yoyo_migration;
