"""The pure parts of the audit export and the compliance report: periods, cells, checksum
lines, the percentile and the bar chart."""

from __future__ import annotations

import statistics
import xml.etree.ElementTree as ET
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gov_pipeline.domain.audit import Period, checksum_line, csv_cell, csv_records, json_line
from gov_pipeline.domain.charts import PLOT_HEIGHT, bar_chart_svg, markdown_image
from gov_pipeline.domain.compliance import percentile
from gov_pipeline.domain.errors import InvalidInputError

SVG = "{http://www.w3.org/2000/svg}"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2026-01-01", datetime(2026, 1, 1, tzinfo=UTC)),
        ("2026-01-01T08:30:00", datetime(2026, 1, 1, 8, 30, tzinfo=UTC)),  # no offset: UTC
        ("2026-01-01T08:30:00Z", datetime(2026, 1, 1, 8, 30, tzinfo=UTC)),
        ("2026-01-01T10:30:00+02:00", datetime(2026, 1, 1, 8, 30, tzinfo=UTC)),
        (date(2026, 3, 1), datetime(2026, 3, 1, tzinfo=UTC)),
        (
            datetime(2026, 3, 1, 1, tzinfo=timezone(timedelta(hours=1))),
            datetime(2026, 3, 1, tzinfo=UTC),
        ),
    ],
)
def test_a_period_bound_is_a_utc_instant(raw: str | date, expected: datetime) -> None:
    period = Period.parse(raw, "2030-01-01")
    assert period.start == expected and period.start.tzinfo == UTC


def test_a_period_must_go_forward() -> None:
    with pytest.raises(InvalidInputError, match=r"^period: --from 2026-01-02T00:00:00\+00:00 must"):
        Period.parse("2026-01-02", "2026-01-01T23:59:59")
    with pytest.raises(InvalidInputError, match=r"^--to: expected a date \(YYYY-MM-DD\)"):
        Period.parse("2026-01-01", "tomorrow")


def test_cells_and_lines() -> None:
    assert [csv_cell(v) for v in (None, True, False, 3, {"a": [1]}, ["x"], "t")] == [
        "", "true", "false", "3", '{"a":[1]}', '["x"]', "t"
    ]  # fmt: skip
    at = datetime(2026, 1, 1, 8, tzinfo=UTC)
    assert json_line({"id": 1, "at": at, "v": {"ü": None}}) == (
        '{"id":1,"at":"2026-01-01T08:00:00+00:00","v":{"ü":null}}\n'
    )
    assert csv_records([{"a": 'x, "y"', "b": None}], ["b", "a"]) == ',"x, ""y"""\r\n'
    assert checksum_line("ab" * 32, "changes.jsonl") == f"{'ab' * 32}  changes.jsonl\n"
    with pytest.raises(ValueError):
        checksum_line("ab" * 32, "two\nlines")


@given(st.lists(st.floats(min_value=0, max_value=1e6), min_size=2, max_size=60))
def test_the_percentile_is_the_inclusive_quantile(values: list[float]) -> None:
    assert percentile(values, 0.5) == pytest.approx(statistics.median(values))
    p90 = statistics.quantiles(values, n=10, method="inclusive")[8]
    assert percentile(values, 0.9) == pytest.approx(p90)


def test_the_percentile_of_one_value_and_of_none() -> None:
    assert percentile([4.0], 0.9) == 4.0
    with pytest.raises(ValueError):
        percentile([], 0.5)


def test_the_bar_chart_is_an_svg_with_a_bar_per_value() -> None:
    svg = bar_chart_svg([("draft", 2), ("in_review", 0), ("a<b", 8)])
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    (bars,) = [g for g in root.iter(f"{SVG}g") if g.get("id") == "bars"]
    heights = [int(r.get("height", "-1")) for r in bars.iter(f"{SVG}rect")]
    assert heights == [PLOT_HEIGHT // 4, 0, PLOT_HEIGHT]
    assert [t.text for t in root.iter(f"{SVG}text")] == ["draft: 2", "in_review: 0", "a<b: 8"]
    assert markdown_image("x", svg).startswith("![x](data:image/svg+xml;base64,PHN2Zy")
    assert ET.fromstring(bar_chart_svg([])).tag == f"{SVG}svg"  # nothing to show still parses
