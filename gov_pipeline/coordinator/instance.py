"""The Dagster instance class the Redis run coordinator needs (named in dagster.yaml as
`instance_class`).

`RedisRunCoordinator` is a QueuedRunCoordinator to the webserver, so the UI's Concurrency
page and a queued run's "View queue criteria" dialog show its limits. Dagster's daemon
starts its own dequeuer for any QueuedRunCoordinator; this instance leaves that daemon out
(the workers are the dequeuers), so no run is launched twice. The coordinator refuses to
work in an instance that would start it.

It also fences run storage against late writers. A run's process cut off from the others
(its host partitioned) can be ended by another worker and then come back with events still
to write; Dagster's run storage would take a late RUN_SUCCESS over the FAILURE already
recorded, and a late materialization over a newer one. Here an event that would change a
state outside the run's own log (the run's status, an asset's latest materialization or
observation) for a run that has already ended is written as an engine event saying so, and
the state stays as it was. A worker that means to have the last word on a run's end (a
timed-out run its launcher terminated ends FAILED whatever its process recorded) says so
with `last_word()`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from dagster import DagsterEvent, DagsterEventType, DagsterInstance, EventLogEntry

from gov_pipeline.coordinator.run_coordinator import QUEUE_DAEMON, RedisRunCoordinator
from gov_pipeline.dagster_internals import EngineEventData, InstanceRef

_LAST_WORD: ContextVar[bool] = ContextVar("gov_last_word", default=False)


@contextmanager
def last_word() -> Iterator[None]:
    """Within it, this process's events end a run even if it has already ended."""
    token = _LAST_WORD.set(True)
    try:
        yield
    finally:
        _LAST_WORD.reset(token)


# Events that change a state outside the run's own log, besides the run's status.
_STATE_EVENTS = frozenset(
    {DagsterEventType.ASSET_MATERIALIZATION, DagsterEventType.ASSET_OBSERVATION}
)


class GovDagsterInstance(DagsterInstance):
    """A DagsterInstance whose daemon does not dequeue runs of the Redis coordinator, and
    whose run storage takes no state change from a run that has already ended."""

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

    def handle_new_event(self, event: EventLogEntry, *, batch_metadata: Any = None) -> None:
        super().handle_new_event(self._unless_late(event), batch_metadata=batch_metadata)

    def _unless_late(self, event: EventLogEntry) -> EventLogEntry:
        """`event`, or an engine event in its place when it would change a state for a run
        that has already ended."""
        happened = event.dagster_event
        if happened is None or not event.run_id or _LAST_WORD.get():
            return event
        if not (happened.is_job_event or happened.event_type in _STATE_EVENTS):
            return event
        run = self.get_run_by_id(event.run_id)
        if run is None or not run.is_finished:
            return event
        message = (
            f"A late {happened.event_type.name} from this run's process, after the run had "
            f"ended {run.status.value}: not applied, the run stays {run.status.value} (a "
            "process cut off while another worker ended its run writes this as it comes back)."
        )
        engine_event = DagsterEvent(
            event_type_value=DagsterEventType.ENGINE_EVENT.value,
            job_name=happened.job_name,
            message=message,
            event_specific_data=EngineEventData(),
            pid=happened.pid,
        )
        return event._replace(
            dagster_event=engine_event, user_message=message, level=logging.WARNING
        )
