"""Every name the project takes from Dagster's private modules (`dagster._...`), in one place:
an upgrade of Dagster checks this module first. Imports nothing of the project.

Public names (`dagster.DagsterRun`, `dagster.RunsFilter`, ...) are imported from `dagster`
where they are used; only what Dagster does not export is here:

- `RunCoordinator`, `ConfigurableClass`, `ConfigurableClassData`: what a run coordinator
  named in dagster.yaml must be (DAGSTER_NOTES.md 1.1, 1.5);
- `execute_run`, `ReconstructableRepository`: executing a run in a fork of a warm worker;
- `WorkspaceProcessContext`, `WorkspaceFileTarget`: a launch-mode worker's code locations;
- `StepEventStatus`: reading a run's step statistics (a rescued run's last steps);
- `ConcurrencyConfig`, `RunQueueConfig`, `InstanceRef`: the instance class that shows the
  Redis coordinator's limits in the UI (coordinator/instance.py).
- `is_valid_cron_string`, `has_out_of_range_cron_interval`, `cron_string_iterator`,
  `reverse_cron_string_iterator`: the cron grammar and the DST-correct tick iteration of
  Dagster's own schedules, so a `scheduled` workflow accepts and fires exactly what a Dagster
  schedule would (domain/schedules.py; Dagster exports no public equivalent).
- `TagConcurrencyLimitsCounter`, `GlobalOpConcurrencyLimitsCounter`, `ACTIVE_RUN_STATUSES`,
  `LaunchRunContext`, `DagsterUserCodeUnreachableError`, `DagsterCodeLocationLoadError`,
  `EngineEventData`, `serializable_error_info_from_exc_info`: the parts of Dagster's
  queued-run dequeuer the coordinator keeps to (what counts as in progress, pool blocking,
  the launch and its user-code retries; coordinator/contract.py).
"""

from __future__ import annotations

from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.errors import DagsterCodeLocationLoadError, DagsterUserCodeUnreachableError
from dagster._core.events import EngineEventData
from dagster._core.execution.api import execute_run
from dagster._core.execution.stats import StepEventStatus
from dagster._core.instance.config import ConcurrencyConfig
from dagster._core.instance.ref import InstanceRef
from dagster._core.launcher import LaunchRunContext
from dagster._core.op_concurrency_limits_counter import GlobalOpConcurrencyLimitsCounter
from dagster._core.run_coordinator import RunCoordinator
from dagster._core.run_coordinator.queued_run_coordinator import RunQueueConfig
from dagster._core.storage.dagster_run import ACTIVE_RUN_STATUSES
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import WorkspaceFileTarget
from dagster._serdes import ConfigurableClass, ConfigurableClassData
from dagster._utils.error import serializable_error_info_from_exc_info
from dagster._utils.schedules import (
    cron_string_iterator,
    has_out_of_range_cron_interval,
    is_valid_cron_string,
    reverse_cron_string_iterator,
)
from dagster._utils.tags import TagConcurrencyLimitsCounter

__all__ = [
    "ACTIVE_RUN_STATUSES",
    "ConcurrencyConfig",
    "ConfigurableClass",
    "ConfigurableClassData",
    "DagsterCodeLocationLoadError",
    "DagsterUserCodeUnreachableError",
    "EngineEventData",
    "GlobalOpConcurrencyLimitsCounter",
    "InstanceRef",
    "LaunchRunContext",
    "ReconstructableRepository",
    "RunCoordinator",
    "RunQueueConfig",
    "StepEventStatus",
    "TagConcurrencyLimitsCounter",
    "WorkspaceFileTarget",
    "WorkspaceProcessContext",
    "cron_string_iterator",
    "execute_run",
    "has_out_of_range_cron_interval",
    "is_valid_cron_string",
    "reverse_cron_string_iterator",
    "serializable_error_info_from_exc_info",
]
