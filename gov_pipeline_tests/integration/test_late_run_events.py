"""Run storage fenced against late writers: a run ended by another worker (its process cut
off) keeps its status and its assets' latest materialization when that process comes back
and writes what it still had (gov_pipeline/coordinator/instance.py)."""

from __future__ import annotations

from collections.abc import Iterator

import dagster as dg
import pytest
from dagster._core.events import StepMaterializationData
from dagster._core.test_utils import instance_for_test

JOB = "process_changes"


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    overrides = {
        "instance_class": {
            "module": "gov_pipeline.coordinator.instance", "class": "GovDagsterInstance",
        },
    }  # fmt: skip
    with instance_for_test(overrides=overrides) as instance:
        yield instance


def _started(instance: dg.DagsterInstance) -> dg.DagsterRun:
    run = instance.add_run(dg.DagsterRun(job_name=JOB, status=dg.DagsterRunStatus.NOT_STARTED))
    for kind in (dg.DagsterEventType.RUN_STARTING, dg.DagsterEventType.RUN_START):
        instance.report_dagster_event(
            dg.DagsterEvent(event_type_value=kind.value, job_name=JOB), run_id=run.run_id
        )
    started = instance.get_run_by_id(run.run_id)
    assert started is not None and started.status == dg.DagsterRunStatus.STARTED
    return started


def _materialized(instance: dg.DagsterInstance, run: dg.DagsterRun, figure: int) -> None:
    materialization = dg.AssetMaterialization("approval_backlog", metadata={"waiting": figure})
    instance.report_dagster_event(
        dg.DagsterEvent(
            event_type_value=dg.DagsterEventType.ASSET_MATERIALIZATION.value, job_name=JOB,
            event_specific_data=StepMaterializationData(materialization),
        ),
        run_id=run.run_id,
    )  # fmt: skip


def _waiting(instance: dg.DagsterInstance) -> object:
    latest = instance.get_latest_materialization_event(dg.AssetKey("approval_backlog"))
    assert latest is not None and latest.asset_materialization is not None
    return latest.asset_materialization.metadata["waiting"].value


def test_a_late_success_of_a_run_already_failed_leaves_it_failed(
    instance: dg.DagsterInstance,
) -> None:
    run = _started(instance)
    instance.report_run_failed(run)  # another worker ended it: its process went silent
    instance.report_dagster_event(
        dg.DagsterEvent(event_type_value=dg.DagsterEventType.RUN_SUCCESS.value, job_name=JOB),
        run_id=run.run_id,
    )
    after = instance.get_run_by_id(run.run_id)
    assert after is not None and after.status == dg.DagsterRunStatus.FAILURE
    notes = [
        e.user_message
        for e in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
    ]
    assert any(
        "A late RUN_SUCCESS from this run's process, after the run had ended FAILURE" in note
        and "the run stays FAILURE" in note
        for note in notes
    ), notes
    assert not instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_SUCCESS)


def test_a_late_materialization_does_not_replace_a_newer_one(
    instance: dg.DagsterInstance,
) -> None:
    cut_off = _started(instance)
    _materialized(instance, cut_off, 3)  # written while the run was alive: it counts
    instance.report_run_failed(cut_off)
    newer = _started(instance)  # the retry, on another worker
    _materialized(instance, newer, 5)
    assert _waiting(instance) == 5
    _materialized(instance, cut_off, 4)  # the cut-off process comes back
    assert _waiting(instance) == 5
    assert (
        len(instance.all_logs(cut_off.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION))
        == 1
    )


def test_a_live_run_writes_its_events_as_dagster_would(instance: dg.DagsterInstance) -> None:
    run = _started(instance)
    _materialized(instance, run, 7)
    instance.report_dagster_event(
        dg.DagsterEvent(event_type_value=dg.DagsterEventType.RUN_SUCCESS.value, job_name=JOB),
        run_id=run.run_id,
    )
    after = instance.get_run_by_id(run.run_id)
    assert after is not None and after.status == dg.DagsterRunStatus.SUCCESS
    assert _waiting(instance) == 7
    assert not [
        e for e in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
        if "late" in (e.user_message or "")
    ]  # fmt: skip


def test_a_worker_having_the_last_word_ends_a_run_its_process_ended(
    instance: dg.DagsterInstance,
) -> None:
    """A timed-out run its launcher terminated recorded RUN_CANCELED; its worker fails it
    (so that run retries apply), and that end is applied."""
    from gov_pipeline.coordinator.instance import last_word

    run = _started(instance)
    instance.report_run_canceled(run)
    canceled = instance.get_run_by_id(run.run_id)
    assert canceled is not None
    instance.report_run_failed(canceled, "not the worker's last word")
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.CANCELED  # type: ignore[union-attr]
    with last_word():
        instance.report_run_failed(canceled, "Timed out")
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE  # type: ignore[union-attr]
