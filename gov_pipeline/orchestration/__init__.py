"""The Dagster layer, thin: resources, ops, jobs, sensors, schedules."""
