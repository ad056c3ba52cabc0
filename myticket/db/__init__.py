"""Everything that talks to PostgreSQL: the repository, migrations, the embedded server, the shipped SQL."""
