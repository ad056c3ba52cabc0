-- name: applied_migrations
-- The yoyo migration ids applied to this database, for the readiness check.
SELECT migration_id FROM _yoyo_migration;

-- name: database_identity
-- Which database this is: the cluster's system identifier (unique per initdb) and the
-- database's name, so a spool is never replayed into another database.
SELECT system_identifier::text, current_database() FROM pg_control_system();

-- name: migrations_table_exists
-- Whether yoyo has ever run on this database (a new one has no _yoyo_migration).
SELECT to_regclass('_yoyo_migration') IS NOT NULL;
