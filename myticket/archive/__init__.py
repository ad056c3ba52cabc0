"""Archive, purge and restore of whole days: the file format and the commands."""
