"""Pure domain logic: no I/O, no database, no Dagster; imports nothing of the project but
domain/ itself."""
