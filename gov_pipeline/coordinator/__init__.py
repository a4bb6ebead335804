"""Redis run coordination: the RunCoordinator Dagster calls, the worker, the Lua scripts, the
key templates and the queue's state names. May import dagster_internals, domain, config."""
