"""Output for humans (aligned tables) and machines (`--json`)."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Collection, Sequence
from datetime import date, datetime
from typing import Any

import click


def _default(value: object) -> object:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return sorted(value) if isinstance(value, set | frozenset) else list(value)
    return str(value)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, default=_default, indent=2, sort_keys=True, ensure_ascii=False))


CELL_WIDTH = 60  # characters of a table cell; longer values are cut, or wrapped


def _text(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, list | tuple):
        text = ",".join(str(v) for v in value)
    elif isinstance(value, datetime):
        text = value.strftime("%Y-%m-%d %H:%M:%S")
    else:
        text = str(value)
    return text.replace("\n", " ")


def _cell(value: object, width: int = CELL_WIDTH) -> str:
    text = _text(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _wrapped(value: object, width: int = CELL_WIDTH) -> list[str]:
    """The whole value on lines of at most `width` (long words are split, never cut)."""
    return textwrap.wrap(_text(value), width, break_on_hyphens=False) or ["-"]


def emit_table(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str],
    *,
    empty: str,
    wrap: Collection[str] = (),
) -> None:
    """Print `rows` as an aligned table of `columns`, or the sentence `empty`.

    Args:
        wrap: columns shown whole, wrapped onto more lines (the others are cut).
    """
    if not rows:
        click.echo(empty)
        return
    cells = [
        [_wrapped(row.get(c)) if c in wrap else [_cell(row.get(c))] for c in columns]
        for row in rows
    ]
    widths = [
        max(len(c), *(len(line) for r in cells for line in r[i])) for i, c in enumerate(columns)
    ]
    header = "  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))
    click.echo(header.rstrip())
    for r in cells:
        for n in range(max(len(lines) for lines in r)):
            line = [
                (ls[n] if n < len(ls) else "").ljust(w) for ls, w in zip(r, widths, strict=True)
            ]
            click.echo("  ".join(line).rstrip())


def emit_record(data: dict[str, Any]) -> None:
    """Print one record as `key: value` lines."""
    width = max((len(k) for k in data), default=0)
    for key, value in data.items():
        click.echo(f"{key.ljust(width)}  {_cell(value, 200)}")
