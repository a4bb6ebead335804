"""Own the transaction and the retries: batch processing, the sync consumer, deliveries,
deadlines, escalation, import, sweep. May import engine, services, db, domain, config."""
