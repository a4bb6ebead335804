"""The embedded default: a Dagster instance on SQLite under GOV_PIPELINE_HOME, local
Dagster processes, and the test and demo webhook receiver. May import domain, config and
dagster_internals only (not the pipeline's layers)."""
