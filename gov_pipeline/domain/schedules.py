"""The `schedule` of a `scheduled` workflow: a cron expression read in an IANA time zone, and
the ticks it gives (pure: datetimes in, datetimes out).

The cron grammar and the tick iteration are Dagster's own (through dagster_internals), so a
workflow accepts exactly the expressions a Dagster schedule accepts and fires at the same
instants, daylight saving time included: on a spring-forward day a tick inside the skipped
hour fires at the first instant after it (`30 2 * * *` in Europe/Berlin at 03:00), and on a
fall-back day a tick inside the repeated hour fires once. Dagster is imported on first use:
it takes about a second to import, and most definitions (and most CLI commands) never need it.
"""

from __future__ import annotations

import difflib
import zoneinfo
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

CronText = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=100)]
ZoneName = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=100)]
# Missed ticks are counted (for the operator's log line) up to this many.
MISSED_COUNTED = 1000


def cron_problem(cron: str) -> str | None:
    """Why Dagster would not run `cron` as written; None when it would."""
    from gov_pipeline.dagster_internals import (
        has_out_of_range_cron_interval,
        is_valid_cron_string,
    )

    if not is_valid_cron_string(cron):
        return (
            f"{cron!r} is not a cron expression Dagster accepts: five fields (minute hour "
            "day-of-month month day-of-week), e.g. '0 9 * * 1-5'"
        )
    if has_out_of_range_cron_interval(cron):
        # Dagster would normalise it and fire more often than written (dagster#15294).
        return f"{cron!r} has a step wider than its field's range (e.g. */90 for minutes)"
    return None


def timezone_problem(name: str) -> str | None:
    """Why `name` is not an IANA time zone (Dagster reads zones with zoneinfo too)."""
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        pass  # not found, not a relative key, a directory such as 'Europe', too long
    else:
        return None
    by_case = {zone.lower(): zone for zone in zoneinfo.available_timezones()}
    close = difflib.get_close_matches(name.lower(), list(by_case), n=1)
    hint = f"did you mean {by_case[close[0]]!r}?" if close else "e.g. Europe/Berlin or UTC"
    return f"unknown time zone {name!r} ({hint})"


class Schedule(BaseModel):
    """When a `scheduled` workflow fires: `cron` (five fields) read in `timezone`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cron: CronText
    timezone: ZoneName = "UTC"

    @field_validator("cron", "timezone")
    @classmethod
    def _usable(cls, value: str, info: ValidationInfo) -> str:
        problem = (cron_problem if info.field_name == "cron" else timezone_problem)(value)
        if problem is not None:
            raise PydanticCustomError(str(info.field_name), "{problem}", {"problem": problem})
        return value


def tick_iso(at: datetime) -> str:
    """A tick as it appears in dedupe keys and cursors: `2025-03-31T07:00:00Z` (UTC)."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def tick_day(schedule: Schedule, at: datetime) -> date:
    """The calendar day of a tick in the schedule's zone (Monday 00:30 in Berlin is a Monday,
    though it is Sunday in UTC): the "today" of a deadline window."""
    return at.astimezone(zoneinfo.ZoneInfo(schedule.timezone)).date()


def ticks_between(
    schedule: Schedule, after: datetime, until: datetime, limit: int | None = None
) -> list[datetime]:
    """The ticks `t` with `after < t <= until`, ascending, in UTC (at most `limit`)."""
    from gov_pipeline.dagster_internals import cron_string_iterator

    found: list[datetime] = []
    for at in cron_string_iterator(after.timestamp(), schedule.cron, schedule.timezone):
        if at > until or (limit is not None and len(found) >= limit):
            break
        if at > after:
            found.append(at.astimezone(UTC))
    return found


def next_tick(schedule: Schedule, after: datetime) -> datetime:
    """The first tick after `after`, in UTC."""
    from gov_pipeline.dagster_internals import cron_string_iterator

    for at in cron_string_iterator(after.timestamp(), schedule.cron, schedule.timezone):
        if at > after:
            return at.astimezone(UTC)
    raise AssertionError("a valid cron expression has a next tick")  # pragma: no cover


@dataclass(frozen=True)
class DueTick:
    """The tick that fires now, and how many earlier ones since the cursor do not (the sensor
    was down; counted up to MISSED_COUNTED)."""

    at: datetime
    missed: int


def due_tick(schedule: Schedule, *, after: datetime, now: datetime) -> DueTick | None:
    """The latest tick in `(after, now]`, or None: only that one fires, however many passed.

    A workflow's ticks are not caught up one by one after a pause (a `* * * * *` workflow
    would otherwise fire hundreds of times at once); the latest stands for them.
    """
    from gov_pipeline.dagster_internals import reverse_cron_string_iterator

    latest = next(
        iter(reverse_cron_string_iterator(now.timestamp(), schedule.cron, schedule.timezone)),
        None,
    )
    if latest is None or latest <= after:
        return None
    latest = latest.astimezone(UTC)
    earlier = ticks_between(schedule, after, latest, limit=MISSED_COUNTED + 1)
    return DueTick(latest, min(len(earlier) - 1, MISSED_COUNTED))
