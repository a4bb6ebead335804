"""The audit export's pure parts: the period it covers, its formats, and how a row becomes a
line of JSON or a CSV record and a file its `SHA256SUMS` line."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any

from gov_pipeline.domain.errors import InvalidInputError


class ExportFormat(StrEnum):
    JSONL = "jsonl"
    CSV = "csv"


DATE_HELP = "a date (YYYY-MM-DD) or an ISO datetime (2026-01-01T08:00:00Z; no offset: UTC)"


def parse_instant(field: str, raw: str | date | datetime) -> datetime:
    """`raw` as an aware UTC datetime: a date is its midnight UTC, a datetime without an
    offset is taken as UTC.

    Raises:
        InvalidInputError: `raw` is neither a date nor an ISO datetime.
    """
    if isinstance(raw, datetime):
        value = raw
    elif isinstance(raw, date):
        value = datetime(raw.year, raw.month, raw.day)
    else:
        text = raw.strip()
        try:
            # Both forms (and a `Z` suffix); a bare date becomes its midnight.
            value = datetime.fromisoformat(text)
        except ValueError:
            raise InvalidInputError(field, f"expected {DATE_HELP}, got {text[:60]!r}") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass(frozen=True)
class Period:
    """A half-open interval [start, end) of UTC time: a row belongs to it when its selecting
    timestamp is at or after `start` and before `end`."""

    start: datetime
    end: datetime

    @classmethod
    def parse(cls, start: str | date | datetime, end: str | date | datetime) -> Period:
        """The period from `start` to `end` (see `parse_instant` for the forms).

        Raises:
            InvalidInputError: either bound is unreadable, or `start` is not before `end`.
        """
        period = cls(parse_instant("--from", start), parse_instant("--to", end))
        if period.start >= period.end:
            raise InvalidInputError(
                "period",
                f"--from {period.start.isoformat()} must be before --to {period.end.isoformat()} "
                "(the period is [from, to): from included, to excluded)",
            )
        return period


def json_value(value: Any) -> Any:
    """`value` as JSON holds it: dates and times as ISO 8601 text, the rest unchanged."""
    return value.isoformat() if isinstance(value, datetime | date) else value


def _iso(value: object) -> str:
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def json_line(row: dict[str, Any]) -> str:
    """One JSON Lines record: the row's columns in their order, one line."""
    # `default` sees only what json cannot write itself: cheaper than converting every value.
    return json.dumps(row, ensure_ascii=False, separators=(",", ":"), default=_iso) + "\n"


def csv_cell(value: Any) -> str:
    """A CSV cell: empty for null, JSON text for JSON columns (objects and lists), `true` or
    `false` for booleans, ISO 8601 for dates and times."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return str(json_value(value))


def csv_records(rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> str:
    """RFC 4180 records (CRLF line ends) of `rows`, cells in the order of `columns`."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for row in rows:
        writer.writerow([csv_cell(row.get(c)) for c in columns])
    return buffer.getvalue()


def checksum_line(digest: str, name: str) -> str:
    """A line of a `SHA256SUMS` file, the format `sha256sum -c` reads (text mode: two
    spaces between the hex digest and the file name)."""
    if "\n" in name or "\\" in name:
        # sha256sum escapes such names; ours are fixed, plain names.
        raise ValueError(f"a checksum line cannot name {name!r}")
    return f"{digest}  {name}\n"
