"""The Dagster instance class the Redis run coordinator needs (named in dagster.yaml as
`instance_class`).

`RedisRunCoordinator` is a QueuedRunCoordinator to the webserver, so the UI's Concurrency
page and a queued run's "View queue criteria" dialog show its limits. Dagster's daemon
starts its own dequeuer for any QueuedRunCoordinator; this instance leaves that daemon out
(the workers are the dequeuers), so no run is launched twice. The coordinator refuses to
work in an instance that would start it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dagster import DagsterInstance

from gov_pipeline.coordinator.run_coordinator import QUEUE_DAEMON, RedisRunCoordinator
from gov_pipeline.dagster_internals import InstanceRef


class GovDagsterInstance(DagsterInstance):
    """A DagsterInstance whose daemon does not dequeue runs of the Redis coordinator."""

    @classmethod
    def config_schema(cls) -> dict[str, Any]:
        return {}

    @staticmethod
    def config_defaults(base_dir: str) -> Any:
        return InstanceRef.config_defaults(base_dir)

    def get_required_daemon_types(self) -> Sequence[str]:
        required = super().get_required_daemon_types()
        if isinstance(self.run_coordinator, RedisRunCoordinator):
            return [daemon for daemon in required if daemon != QUEUE_DAEMON]
        return required
