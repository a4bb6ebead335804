"""Output for humans (aligned tables) and machines (`--json`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
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


def _cell(value: object, width: int = 60) -> str:
    if value is None:
        return "-"
    if isinstance(value, list | tuple):
        text = ",".join(str(v) for v in value)
    elif isinstance(value, datetime):
        text = value.strftime("%Y-%m-%d %H:%M:%S")
    else:
        text = str(value)
    text = text.replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def emit_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], *, empty: str) -> None:
    """Print `rows` as an aligned table of `columns`, or the sentence `empty`."""
    if not rows:
        click.echo(empty)
        return
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    click.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)))
    for r in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


def emit_record(data: dict[str, Any]) -> None:
    """Print one record as `key: value` lines."""
    width = max((len(k) for k in data), default=0)
    for key, value in data.items():
        click.echo(f"{key.ljust(width)}  {_cell(value, 200)}")
