"""The invariant checker (`gov-pipeline verify`): reads the application database and,
for runs, Dagster's run storage and Redis. May import coordinator, services, db, domain."""
