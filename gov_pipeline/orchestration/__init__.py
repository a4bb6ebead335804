"""The Dagster layer, thin: resources, ops, jobs, sensors, schedules. Ops and sensors parse
config, take resources, call one function of runners/ (or checks/) and attach metadata; no
SQL here. May import runners, engine and services (for their result types), checks,
coordinator, dagster_internals, db (the engine factory), domain and config."""
