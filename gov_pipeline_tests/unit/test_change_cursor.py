"""The change cursor's encoding and gap arithmetic (the reader itself is tested on databases)."""

from __future__ import annotations

import pytest

from gov_pipeline.domain.errors import InvalidInputError
from gov_pipeline.services.changes import ChangeCursor, Gap, _missing_ranges, _subtract


def test_round_trip() -> None:
    cursor = ChangeCursor(42, (Gap(3, 5, 900), Gap(40, 40, 901)))
    assert ChangeCursor.decode(cursor.encode()) == cursor
    assert cursor.pending_gap_ids == 4


@pytest.mark.parametrize("raw", [None, "", "  "])
def test_empty_is_the_start(raw: str | None) -> None:
    assert ChangeCursor.decode(raw) == ChangeCursor()


def test_a_plain_id_is_a_watermark() -> None:
    assert ChangeCursor.decode("17") == ChangeCursor(17)


@pytest.mark.parametrize(
    "raw", ["{", "[1,2]", '{"g": []}', '{"w": "x"}', "true", '{"w":1,"g":[[1]]}']
)
def test_garbage_is_refused(raw: str) -> None:
    with pytest.raises(InvalidInputError, match="cursor"):
        ChangeCursor.decode(raw)


def test_missing_ranges() -> None:
    assert _missing_ranges(0, [1, 2, 3], 3) == []
    assert _missing_ranges(0, [2, 5], 5) == [(1, 1), (3, 4)]
    assert _missing_ranges(10, [], 12) == [(11, 12)]
    assert _missing_ranges(10, [11], 10) == []


def test_subtract_splits_a_gap_around_seen_ids() -> None:
    gap = Gap(10, 20, 7)
    assert _subtract(gap, [1, 30]) == [gap]
    assert _subtract(gap, [10, 15, 20]) == [Gap(11, 14, 7), Gap(16, 19, 7)]
    assert _subtract(Gap(5, 5, 1), [5]) == []


def test_the_anchor_round_trips_and_is_optional() -> None:
    anchored = ChangeCursor(42, (Gap(3, 5, 900),), "2026-11-26T08:00:00.123456+00:00")
    assert ChangeCursor.decode(anchored.encode()) == anchored
    assert '"a"' not in ChangeCursor(42).encode()  # the form written before anchors
    assert ChangeCursor.decode('{"w":42,"g":[]}').anchor is None


def test_an_anchor_that_is_not_text_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="cursor"):
        ChangeCursor.decode('{"w":1,"g":[],"a":5}')
