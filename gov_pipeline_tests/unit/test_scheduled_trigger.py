"""The `scheduled` trigger, pure: its `schedule` validated with every other issue of the
definition, and the ticks it gives, daylight saving time included."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from gov_pipeline.domain.definitions import parse_definition
from gov_pipeline.domain.entity_fields import ENTITY_FIELDS, current_row_fields, readable_fields
from gov_pipeline.domain.errors import DefinitionError
from gov_pipeline.domain.schedules import Schedule, due_tick, next_tick, tick_iso, ticks_between
from gov_pipeline.domain.statuses import EntityType, Trigger
from gov_pipeline.runners.scheduled_triggers import ScheduleCursor, dedupe_key

BASE: dict[str, Any] = {
    "name": "Weekly digest",
    "tenant_id": "acme",
    "type": "notification",
    "trigger": "scheduled",
    "actions": [{"type": "notify", "include_owner": True, "title": "Review due"}],
}
BERLIN_9 = Schedule(cron="0 9 * * *", timezone="Europe/Berlin")


def issues(**fields: Any) -> list[str]:
    try:
        parse_definition({**BASE, **fields})
    except DefinitionError as err:
        return [str(issue) for issue in err.issues]
    return []


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


# -- validation --------------------------------------------------------------------------


def test_a_schedule_with_a_cron_and_a_zone_parses_and_the_zone_defaults_to_utc() -> None:
    definition = parse_definition(
        {**BASE, "schedule": {"cron": "0 9 * * 1-5", "timezone": "Europe/Berlin"}}
    )
    assert definition.schedule == Schedule(cron="0 9 * * 1-5", timezone="Europe/Berlin")
    bare = parse_definition({**BASE, "schedule": {"cron": "@daily"}})
    assert bare.schedule is not None and bare.schedule.timezone == "UTC"


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        (
            {"cron": "0 9 * *"},
            "schedule.cron: '0 9 * *' is not a cron expression Dagster accepts: five fields "
            "(minute hour day-of-month month day-of-week), e.g. '0 9 * * 1-5'",
        ),
        (
            {"cron": "0 9 * * * 2025"},
            "schedule.cron: '0 9 * * * 2025' is not a cron expression Dagster accepts: five "
            "fields (minute hour day-of-month month day-of-week), e.g. '0 9 * * 1-5'",
        ),
        (
            {"cron": "0 0 30 2 *"},
            "schedule.cron: '0 0 30 2 *' is not a cron expression Dagster accepts: five fields "
            "(minute hour day-of-month month day-of-week), e.g. '0 9 * * 1-5'",
        ),
        (
            {"cron": "*/90 * * * *"},
            "schedule.cron: '*/90 * * * *' has a step wider than its field's range "
            "(e.g. */90 for minutes)",
        ),
        ({"cron": 9}, "schedule.cron: Input should be a valid string"),
        ({"timezone": "UTC"}, "schedule.cron: required field is missing"),
        (
            {"cron": "0 9 * * *", "timezone": "europe/berlin"},
            "schedule.timezone: unknown time zone 'europe/berlin' (did you mean 'Europe/Berlin'?)",
        ),
        (
            {"cron": "0 9 * * *", "timezone": "Mars/Olympus_Mons"},
            "schedule.timezone: unknown time zone 'Mars/Olympus_Mons' (e.g. Europe/Berlin or UTC)",
        ),
        (
            {"cron": "0 9 * * *", "timezone": "Europe"},
            "schedule.timezone: unknown time zone 'Europe' (did you mean 'Europe/Rome'?)",
        ),
        ({"cron": "0 9 * * *", "limit": 10}, "schedule.limit: unknown key"),
    ],
)
def test_a_bad_schedule_is_reported_at_its_path(schedule: dict[str, Any], expected: str) -> None:
    assert issues(schedule=schedule) == [expected]


def test_a_scheduled_workflow_needs_a_schedule() -> None:
    assert issues() == ["schedule: required when trigger is scheduled"]


def test_a_schedule_is_refused_on_another_trigger() -> None:
    assert issues(trigger="on_status_change", schedule={"cron": "0 9 * * *"}) == [
        "schedule: only for trigger: scheduled (this workflow's trigger is on_status_change)"
    ]


def test_schedule_issues_come_together_with_every_other_issue() -> None:
    found = issues(
        schedule={"cron": "0 25 * * *", "timezone": "Nowhere"},
        priority="5",
        actions=[{"type": "notify", "title": "no recipient"}],
        conditions={"field": "entity.staus", "op": "eq", "value": "published"},
    )
    assert found == [
        "conditions.field: unknown field 'staus' of policy (did you mean 'status'?)",
        "actions[0]: notify needs a recipient: users, roles or include_owner: true",
        "schedule.cron: '0 25 * * *' is not a cron expression Dagster accepts: five fields "
        "(minute hour day-of-month month day-of-week), e.g. '0 9 * * 1-5'",
        "schedule.timezone: unknown time zone 'Nowhere' (e.g. Europe/Berlin or UTC)",
        "priority: Input should be a valid integer",
    ]


def test_conditions_of_a_scheduled_workflow_read_the_current_row_and_no_old_values() -> None:
    schedule = {"cron": "0 9 * * 1"}
    assert (
        issues(schedule=schedule, conditions={"field": "new.status", "op": "eq", "value": 1}) == []
    )
    assert issues(schedule=schedule, conditions={"field": "old.status", "op": "exists"}) == [
        "conditions.field: field 'status' of a scheduled run's old values is not given to "
        "conditions: nothing changed; read entity.status"
    ]
    assert issues(schedule=schedule, conditions={"field": "old.stats", "op": "exists"}) == [
        "conditions.field: unknown field 'stats' of a scheduled run's old values (there are none)"
    ]
    # On a change-driven trigger old.* stays what it was.
    assert issues(trigger="on_update", conditions={"field": "old.status", "op": "exists"}) == []


def test_a_stored_version_from_before_schedules_still_loads() -> None:
    definition = parse_definition(BASE, check_fields=False)
    assert definition.schedule is None


def test_without_a_schedule_the_fingerprint_is_the_one_from_before_the_field() -> None:
    data = {**BASE, "trigger": "on_update"}
    definition = parse_definition(data)
    before = definition.model_dump(mode="json")
    assert before.pop("schedule") is None
    canonical = json.dumps(before, sort_keys=True, separators=(",", ":"))
    assert definition.fingerprint() == hashlib.sha256(canonical.encode()).hexdigest()
    scheduled = parse_definition({**BASE, "schedule": {"cron": "0 9 * * 1"}})
    moved = parse_definition({**BASE, "schedule": {"cron": "0 10 * * 1"}})
    assert scheduled.fingerprint() != moved.fingerprint()
    utc_given = parse_definition({**BASE, "schedule": {"cron": "0 9 * * 1", "timezone": "UTC"}})
    assert scheduled.fingerprint() == utc_given.fingerprint()


# -- ticks ------------------------------------------------------------------------------


def test_daily_9am_berlin_moves_in_utc_across_the_spring_change() -> None:
    # Clocks go forward on Sunday 30 March 2025: 09:00 is 08:00Z before, 07:00Z from then on.
    ticks = ticks_between(BERLIN_9, utc(2025, 3, 28, 9), utc(2025, 4, 1, 0))
    assert ticks == [utc(2025, 3, 29, 8), utc(2025, 3, 30, 7), utc(2025, 3, 31, 7)]


def test_daily_9am_berlin_moves_back_across_the_autumn_change() -> None:
    ticks = ticks_between(BERLIN_9, utc(2025, 10, 25, 0), utc(2025, 10, 27, 23))
    assert ticks == [utc(2025, 10, 25, 7), utc(2025, 10, 26, 8), utc(2025, 10, 27, 8)]


def test_a_tick_in_the_skipped_or_repeated_hour_fires_once() -> None:
    at_half_past_two = Schedule(cron="30 2 * * *", timezone="Europe/Berlin")
    # Spring: 02:30 does not exist on 30 March; it fires at 03:00 CEST (01:00Z), once.
    spring = ticks_between(at_half_past_two, utc(2025, 3, 29, 0), utc(2025, 3, 31, 12))
    assert spring == [utc(2025, 3, 29, 1, 30), utc(2025, 3, 30, 1), utc(2025, 3, 31, 0, 30)]
    # Autumn: 02:30 happens twice on 26 October; it fires once, at the second (01:30Z).
    autumn = ticks_between(at_half_past_two, utc(2025, 10, 25, 0), utc(2025, 10, 27, 12))
    assert autumn == [utc(2025, 10, 25, 0, 30), utc(2025, 10, 26, 1, 30), utc(2025, 10, 27, 1, 30)]


def test_weekdays_only() -> None:
    weekdays = Schedule(cron="0 9 * * 1-5", timezone="Europe/Berlin")
    # Friday 4 April 2025 to Tuesday 8 April: Friday, Monday, Tuesday.
    ticks = ticks_between(weekdays, utc(2025, 4, 4, 0), utc(2025, 4, 8, 23))
    assert [t.day for t in ticks] == [4, 7, 8]


def test_the_due_tick_is_the_latest_since_the_cursor_with_the_missed_ones_counted() -> None:
    every_minute = Schedule(cron="* * * * *")
    assert (
        due_tick(every_minute, after=utc(2025, 1, 1, 12, 0, 10), now=utc(2025, 1, 1, 12, 0, 50))
        is None
    )
    one = due_tick(every_minute, after=utc(2025, 1, 1, 12, 0, 50), now=utc(2025, 1, 1, 12, 1, 5))
    assert one is not None and (one.at, one.missed) == (utc(2025, 1, 1, 12, 1), 0)
    # Down for ten minutes: only 12:11 fires; the nine before it are missed.
    late = due_tick(every_minute, after=utc(2025, 1, 1, 12, 1, 5), now=utc(2025, 1, 1, 12, 11, 30))
    assert late is not None and (late.at, late.missed) == (utc(2025, 1, 1, 12, 11), 9)
    # A tick exactly at `now` is due; one exactly at the cursor was handled already.
    exact = due_tick(every_minute, after=utc(2025, 1, 1, 12, 1, 5), now=utc(2025, 1, 1, 12, 2))
    assert exact is not None and exact.at == utc(2025, 1, 1, 12, 2)
    assert (
        due_tick(every_minute, after=utc(2025, 1, 1, 12, 2), now=utc(2025, 1, 1, 12, 2, 30)) is None
    )


def test_the_due_tick_in_a_zone_and_the_next_tick() -> None:
    monday_9 = Schedule(cron="0 9 * * 1", timezone="Europe/Berlin")
    due = due_tick(monday_9, after=utc(2025, 3, 24, 8, 0, 30), now=utc(2025, 3, 31, 7, 0, 4))
    assert due is not None and (due.at, due.missed) == (utc(2025, 3, 31, 7), 0)
    assert next_tick(monday_9, utc(2025, 3, 31, 7)) == utc(2025, 4, 7, 7)
    assert tick_iso(due.at) == "2025-03-31T07:00:00Z"


def test_the_dedupe_key_and_the_cursor() -> None:
    assert dedupe_key(utc(2025, 3, 31, 7), "policy", 3) == "scheduled:2025-03-31T07:00:00Z:policy:3"
    cursor = ScheduleCursor({4: utc(2025, 3, 31, 7, 0, 4, 123456), 2: utc(2025, 3, 31, 6)})
    assert ScheduleCursor.decode(cursor.encode()) == cursor
    assert ScheduleCursor.decode(None) == ScheduleCursor() == ScheduleCursor.decode("")


def test_what_the_conditions_of_a_scheduled_workflow_can_read() -> None:
    readable = readable_fields(EntityType.POLICY, Trigger.SCHEDULED)
    row = current_row_fields(EntityType.POLICY)
    assert readable.entity == row and readable.new.names == row.names
    assert readable.old.names == () and "status" in readable.old.withheld
    assert readable.changed == ENTITY_FIELDS[EntityType.POLICY]


def test_the_sensor_ticks_at_the_configured_interval() -> None:
    from gov_pipeline.config import load_settings
    from gov_pipeline.orchestration.scheduled_triggers import scheduled_sensor

    assert load_settings({}).scheduled_interval_s == 15
    settings = load_settings({"GOV_PIPELINE_SCHEDULED_INTERVAL": "30"})
    assert scheduled_sensor(settings).minimum_interval_seconds == 29  # on the daemon's wake-up
