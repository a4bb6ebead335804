"""Tables for humans (gov_pipeline.cli.output): long cells are cut, or wrapped whole."""

from __future__ import annotations

import pytest

from gov_pipeline.cli.output import CELL_WIDTH, emit_table

REASON = (
    "webhook to https://hooks.example.org/a/very/long/path/that/is/longer/than/a/cell/x "
    "failed after 10 attempts: HTTP 500"
)


def test_a_wrapped_column_shows_the_whole_value_aligned_and_others_are_cut(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rows = [
        {"id": 7, "title": "t" * 70, "why": REASON},
        {"id": 12, "title": "short", "why": None},
    ]
    emit_table(rows, ["id", "title", "why"], empty="none", wrap=["why"])
    header, *lines = capsys.readouterr().out.splitlines()
    column = header.index("WHY")
    assert header.startswith("ID  TITLE") and header == header.rstrip()
    assert lines[0].startswith("7   " + "t" * (CELL_WIDTH - 1) + "…")
    continued = [line for line in lines if line.startswith(" ")]
    assert continued and all(line[:column].strip() == "" for line in continued)
    row = [line[column:] for line in lines[:-1]]
    assert all(len(part) <= CELL_WIDTH for part in row)
    # Every character is there: a word longer than the cell is split, never cut.
    assert "".join(row).replace(" ", "") == REASON.replace(" ", "")
    assert lines[-1].split() == ["12", "short", "-"]


def test_without_wrap_a_long_value_is_cut(capsys: pytest.CaptureFixture[str]) -> None:
    emit_table([{"why": REASON}], ["why"], empty="none")
    (_, line) = capsys.readouterr().out.splitlines()
    assert line == REASON[: CELL_WIDTH - 1] + "…"
