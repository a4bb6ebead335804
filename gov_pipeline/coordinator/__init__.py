"""Redis run coordination: the RunCoordinator Dagster calls, the worker, the Redis scripts."""
