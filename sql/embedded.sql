-- name: set_superuser_password
-- Gives the embedded server's superuser the password kept beside its data directory,
-- for a data directory initialised before the server required one (trust auth).
ALTER ROLE postgres PASSWORD %(password)s;
