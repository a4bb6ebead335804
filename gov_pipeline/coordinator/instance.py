"""The Dagster instance class that lets the UI show the Redis run coordinator's limits.

The webserver reads a run queue's limits (the "View queue criteria" dialog of a queued run)
from `DagsterInstance.get_concurrency_config()`, which Dagster fills only for its own
QueuedRunCoordinator; with ours the dialog waits for ever. This subclass fills it from
`RedisRunCoordinator.get_run_queue_config()`. Dagster's own dequeuer still does not start
(it starts only for a QueuedRunCoordinator), so no run is launched twice. Named in
dagster.yaml as `instance_class`; the Concurrency page still says run queuing is not
supported (it asks whether the coordinator is a QueuedRunCoordinator).
"""

from __future__ import annotations

from typing import Any

from dagster import DagsterInstance

from gov_pipeline.coordinator.run_coordinator import RedisRunCoordinator
from gov_pipeline.dagster_internals import ConcurrencyConfig, InstanceRef


class GovDagsterInstance(DagsterInstance):
    """A DagsterInstance whose run queue config is the Redis coordinator's."""

    @classmethod
    def config_schema(cls) -> dict[str, Any]:
        return {}

    @staticmethod
    def config_defaults(base_dir: str) -> Any:
        return InstanceRef.config_defaults(base_dir)

    def get_concurrency_config(self) -> ConcurrencyConfig:
        coordinator = self.run_coordinator
        if not isinstance(coordinator, RedisRunCoordinator):
            return super().get_concurrency_config()
        return ConcurrencyConfig.from_concurrency_settings(
            self.get_settings("concurrency"), coordinator.get_run_queue_config()
        )
