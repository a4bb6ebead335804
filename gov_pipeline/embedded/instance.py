"""The embedded Dagster instance (SQLite storage, no server): what `make demo` and a new
user get. The production instance is the top-level dagster.yaml."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from gov_pipeline.config import Settings

ROOT = Path(__file__).resolve().parents[2]
WORKSPACE = ROOT / "workspace.yaml"

EMBEDDED_INSTANCE_YAML = """\
# Embedded instance: SQLite storage under this directory, no server needed.
run_coordinator:
  module: dagster._core.run_coordinator
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: 4
    dequeue_interval_seconds: 1
    tag_concurrency_limits:
      - key: gov/entity
        value: {applyLimitPerUniqueValue: true}
        limit: 1
run_retries:
  enabled: true
  max_retries: 2
  retry_on_asset_or_op_failure: false
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
  poll_interval_seconds: 30
sensors:
  use_threads: true
  num_workers: 2
telemetry:
  enabled: false
nux:  # no "join the community" dialog over the operator's pages
  enabled: false
"""


REDIS_INSTANCE_YAML = """\
# Embedded instance with the Redis run coordinator (SQLite storage; Redis from the env).
instance_class:
  module: gov_pipeline.coordinator.instance
  class: GovDagsterInstance
run_coordinator:
  module: gov_pipeline.coordinator.run_coordinator
  class: RedisRunCoordinator
  config:
    key_prefix: {prefix}
run_retries:
  enabled: true
  max_retries: 2
  retry_on_asset_or_op_failure: false
sensors:
  use_threads: true
  num_workers: 2
telemetry:
  enabled: false
nux:  # no "join the community" dialog over the operator's pages
  enabled: false
"""


def embedded_dagster_home(settings: Settings, redis_prefix: str | None = None) -> Path:
    """`<home>/dagster`, with its dagster.yaml written if missing (Dagster's own queue, or
    the Redis run coordinator under `redis_prefix` when one is given)."""
    home = settings.home / "dagster"
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if redis_prefix is not None:
        config.write_text(REDIS_INSTANCE_YAML.format(prefix=redis_prefix))
    elif not config.exists():
        config.write_text(EMBEDDED_INSTANCE_YAML)
    return home


def prepare_instance(dagster_home: Path) -> None:
    """Create the instance's storage now, in this process.

    Two Dagster processes starting on a fresh SQLite home (the daemon and a
    `dagster job launch`, say) would both create the tables and one would fail.
    """
    from dagster import DagsterInstance

    with DagsterInstance.from_config(str(dagster_home)) as instance:
        instance.get_runs(limit=1)
        instance.all_instigator_state()


def dagster_env(
    settings: Settings, dagster_home: Path, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment for Dagster processes serving this project's data."""
    env = dict(os.environ)
    env.update(
        {
            "DAGSTER_HOME": str(dagster_home),
            "GOV_PIPELINE_DATABASE_URL": settings.database_url,
            "GOV_PIPELINE_HOME": str(settings.home),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(dict(extra or {}))
    return env
