"""Bulk import of governed records (policies, risks, ...) from CSV or JSON: read, validate
every row, then create them in chunks (one transaction each) through the record service, so
each insert is a change."""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from gov_pipeline.db.models import ENTITY_MODELS
from gov_pipeline.domain.entities import EntityKind, kind_of
from gov_pipeline.domain.errors import InvalidInputError
from gov_pipeline.domain.record_fields import MAX_CONTENT_CHARS, editable_fields, validate_fields
from gov_pipeline.domain.statuses import EntityType
from gov_pipeline.services import records
from gov_pipeline.services.tenants import require_tenant

log = logging.getLogger(__name__)

MAPPING_COLUMNS = frozenset({"custom_fields"})  # JSON text in a CSV cell
BOOLEAN_COLUMNS = frozenset({"requires_acknowledgment"})
BOOLEANS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
FORMATS = ("csv", "json")
# How many problems an error message lists.
SHOWN_PROBLEMS = 10
# csv refuses fields over 128 KiB by default; a policy's content may hold 5 M characters
# (and custom_fields JSON text beside it). Longer content still fails validation, by row.
CSV_FIELD_LIMIT = 2 * MAX_CONTENT_CHARS


@dataclass(frozen=True)
class ImportReport:
    created: int
    chunks: int
    first_id: int | None
    last_id: int | None
    seconds: float


def import_columns(entity_type: str) -> tuple[str, ...]:
    """The columns an import of `entity_type` may have: its editable fields and status."""
    return (*editable_fields(kind_of(entity_type).entity_type), "status")


def _problems(what: str, problems: list[str], count: int) -> str:
    return f"{count} {what}: " + "; ".join(problems[:SHOWN_PROBLEMS])


def _csv_cell(kind: EntityKind, column: str, raw: str) -> Any:
    """A CSV cell as the field expects it.

    Raises:
        ValueError: the cell cannot be read as its column's type.
    """
    if column in kind.containers - MAPPING_COLUMNS:
        return [part.strip() for part in raw.split(";") if part.strip()]
    if column in BOOLEAN_COLUMNS:
        try:
            return BOOLEANS[raw.strip().lower()]
        except KeyError:
            raise ValueError(f"expected true/false/yes/no/1/0, got {raw[:40]!r}") from None
    if column in MAPPING_COLUMNS:
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not valid JSON ({exc})") from None
        if not isinstance(value, dict):
            raise ValueError("expected a JSON object")
        return value
    return raw


def _read_csv(kind: EntityKind, path: Path, text: str) -> list[dict[str, Any]]:
    csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            raise InvalidInputError(str(path), "empty file: expected a header row")
        columns = [name.strip() for name in header]
        known = import_columns(kind.entity_type)
        for name in columns:
            if name not in known:
                raise InvalidInputError(
                    str(path), f"unknown column {name[:60]!r} (columns: {', '.join(known)})"
                )
        duplicated = sorted({n for n in columns if columns.count(n) > 1})
        if duplicated:
            raise InvalidInputError(str(path), f"column {duplicated[0]!r} appears twice")
        rows: list[dict[str, Any]] = []
        problems: list[str] = []
        bad_rows = 0
        for number, cells in enumerate(reader, start=1):
            if not any(cell.strip() for cell in cells):
                continue  # a blank line is not a row
            if len(cells) > len(columns):
                raise InvalidInputError(
                    str(path), f"row {number}: {len(cells)} cells but {len(columns)} columns"
                )
            row: dict[str, Any] = {}
            row_ok = True
            for column, raw in zip(columns, cells, strict=False):
                if not raw.strip():
                    continue  # an empty cell leaves the field unset
                try:
                    row[column] = _csv_cell(kind, column, raw)
                except ValueError as exc:
                    problems.append(f"row {number}: {column}: {exc}")
                    row_ok = False
            bad_rows += not row_ok
            rows.append(row)
    except csv.Error as exc:
        raise InvalidInputError(str(path), f"line {reader.line_num}: {exc}") from None
    if problems:
        raise InvalidInputError(str(path), _problems("unreadable row(s)", problems, bad_rows))
    return rows


def _read_json(kind: EntityKind, path: Path, text: str) -> list[dict[str, Any]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(str(path), f"not valid JSON: {exc}") from None
    if isinstance(data, dict) and kind.command in data:
        data = data[kind.command]
    if not isinstance(data, list):
        raise InvalidInputError(
            str(path), f'expected a list of {kind.noun} objects or {{"{kind.command}": [...]}}'
        )
    for number, item in enumerate(data, start=1):
        if not isinstance(item, dict):
            raise InvalidInputError(
                str(path), f"row {number}: expected an object, got {type(item).__name__}"
            )
    return [dict(item) for item in data]


def read_import_file(
    path: Path, fmt: str | None = None, entity_type: str = EntityType.POLICY
) -> list[dict[str, Any]]:
    """Read the records of a CSV or JSON file as field dicts (not validated yet).

    CSV: a header row of the entity type's fields (`import_columns`); lists (`tags`,
    `business_units`) `;`-separated, `custom_fields` JSON text, `requires_acknowledgment`
    true/false/yes/no/1/0; empty cells are left out. JSON: a list of objects, or
    `{"<command>": [...]}` (`{"policies": [...]}`, `{"risks": [...]}`).

    Args:
        fmt: `csv` or `json`; by default taken from the file's suffix.

    Raises:
        InvalidInputError: unknown format, unreadable file, bad JSON, an unknown column, or
            cells that cannot be read (the message names the file, and row and column).
    """
    entity = kind_of(entity_type)
    kind = (fmt or path.suffix.lstrip(".")).lower()
    if kind not in FORMATS:
        raise InvalidInputError(
            str(path), f"unknown import format {kind!r} (one of: {', '.join(FORMATS)})"
        )
    try:
        # utf-8-sig: spreadsheet exports often start with a byte-order mark.
        with path.open(encoding="utf-8-sig", newline="") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(str(path), f"cannot read the file: {exc}") from None
    return _read_csv(entity, path, text) if kind == "csv" else _read_json(entity, path, text)


def validate_rows(
    rows: Iterable[dict[str, Any]], entity_type: str = EntityType.POLICY
) -> list[dict[str, Any]]:
    """Check every row as the fields of a new record of `entity_type` (status allowed) and
    return them normalised, with the status when given.

    Raises:
        InvalidInputError: one or more rows are invalid; the message counts them and lists
            the first problems as `row N: <field>: <message>` (N counts data rows from 1).
    """
    kind = kind_of(entity_type)
    valid: list[dict[str, Any]] = []
    problems: list[str] = []
    bad_rows = 0
    for number, row in enumerate(rows, start=1):
        found: list[str] = []
        values: dict[str, Any] = {}
        try:
            values = validate_fields(kind.entity_type, row, creating=True)
        except InvalidInputError as exc:
            found.append(f"row {number}: {exc}")
        status = row.get("status")
        if status is not None:
            try:
                values["status"] = kind.lifecycle.parse(str(status))
            except InvalidInputError as exc:
                found.append(f"row {number}: {exc}")
        problems.extend(found)
        bad_rows += bool(found)
        valid.append(values)
    if problems:
        raise InvalidInputError("rows", _problems("invalid row(s)", problems, bad_rows))
    return valid


def _created_by(
    sessions: sessionmaker[Session], entity_type: EntityType, tenant_id: str, actor: str
) -> int:
    """How many records of `entity_type` in the tenant `actor` created."""
    model = ENTITY_MODELS[entity_type]
    with sessions.begin() as session:
        query = select(func.count()).select_from(model)
        found = session.scalar(query.where(model.tenant_id == tenant_id, model.created_by == actor))
    return int(found or 0)


def import_records(
    sessions: sessionmaker[Session],
    *,
    tenant_id: str,
    rows: list[dict[str, Any]],
    entity_type: str = EntityType.POLICY,
    chunk_size: int = 500,
    actor: str = "import",
    on_progress: Callable[[int, int], None] | None = None,
    resume: bool = False,
) -> ImportReport:
    """Create one record of `entity_type` per row, `chunk_size` per transaction, each
    captured as a change.

    All rows are validated before anything is written. A database failure in a later chunk
    leaves the chunks before it committed (`on_progress` has said how far it got).

    Args:
        actor: recorded as `created_by` and as the changes' actor.
        on_progress: called with (rows done, rows in total) after each committed chunk.
        resume: `actor` names this import alone (the `import_records` job: its first run's
            id), so records it already created are the first rows of the file, committed by
            an earlier attempt: skip them, and a retried import creates each record once.

    Raises:
        InvalidInputError: a row is invalid (nothing written), or `chunk_size` < 1.
        NotFoundError: unknown tenant (nothing written).
    """
    if chunk_size < 1:
        raise InvalidInputError("chunk_size", "must be >= 1")
    started = time.perf_counter()
    kind = kind_of(entity_type)
    valid = validate_rows(rows, kind.entity_type)
    with sessions.begin() as session:
        require_tenant(session, tenant_id)
    total = len(valid)
    who = records.Actor(user_id=actor)
    first_id: int | None = None
    last_id: int | None = None
    done = chunks = 0
    skip = min(total, _created_by(sessions, kind.entity_type, tenant_id, actor)) if resume else 0
    if skip:
        log.info("import into %s: %s of %s rows created by an earlier attempt", tenant_id,
                 skip, total)  # fmt: skip
    for start in range(skip, total, chunk_size):
        with sessions.begin() as session:
            for fields in valid[start : start + chunk_size]:
                record = records.create_record(
                    session, kind.entity_type, tenant_id=tenant_id, fields=fields, actor=who,
                    importing=True,
                )  # fmt: skip
                first_id = record.id if first_id is None else first_id
                last_id = record.id
        done = min(start + chunk_size, total)
        chunks += 1
        log.info("import into %s: %s of %s %s records created", tenant_id, done, total, kind.noun)
        if on_progress is not None:
            on_progress(done, total)
    created = done - skip if done else 0
    return ImportReport(created, chunks, first_id, last_id, time.perf_counter() - started)
