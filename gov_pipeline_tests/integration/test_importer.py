"""Bulk import of policies from CSV and JSON: chunks and progress, all-or-nothing
validation, file errors, unknown tenant, odd text — on both databases."""

from __future__ import annotations

import csv
import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gov_pipeline.db.models import EntityChange, Policy
from gov_pipeline.domain.errors import InvalidInputError, NotFoundError
from gov_pipeline.runners.importer import import_records, read_import_file, validate_rows
from gov_pipeline_tests.integration.engine_support import count

HEADER = ["title", "policy_type", "owner_id", "status", "tags", "next_review_date"]
ODD_TITLE = 'Política «privée» — 数据保护 🔒 \u202eRTL\u202c, "quoted"; semi'


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def written(sessions: sessionmaker[Session]) -> tuple[int, int]:
    return count(sessions, Policy), count(sessions, EntityChange)


def load(sessions: sessionmaker[Session], policy_id: int | None) -> Policy:
    with sessions.begin() as session:
        policy = session.get(Policy, policy_id)
        assert policy is not None
        return policy


def test_a_large_csv_is_imported_in_chunks_with_progress(
    sessions: sessionmaker[Session], tenant: str, tmp_path: Path
) -> None:
    cells = [
        [f"Policy {i}", "Information Security", "olivia", "draft", "iso27001;annual", "2031-01-01"]
        for i in range(1200)
    ]
    rows = read_import_file(write_csv(tmp_path / "policies.csv", HEADER, cells))
    progress: list[tuple[int, int]] = []
    report = import_records(
        sessions, tenant_id=tenant, rows=rows, chunk_size=500,
        on_progress=lambda done, total: progress.append((done, total)),
    )  # fmt: skip
    assert progress == [(500, 1200), (1000, 1200), (1200, 1200)]
    assert (report.created, report.chunks) == (1200, 3)
    assert report.first_id is not None and report.last_id is not None
    assert report.last_id - report.first_id == 1199 and report.seconds > 0
    assert count(sessions, Policy, Policy.tenant_id == tenant) == 1200
    created = count(sessions, EntityChange, EntityChange.kind == "created")
    assert created == count(sessions, EntityChange) == 1200
    with sessions.begin() as session:
        actors = set(session.scalars(select(EntityChange.actor)))
    assert actors == {"import"}
    last = load(sessions, report.last_id)
    assert (last.title, last.tags, last.next_review_date) == (
        "Policy 1199", ["iso27001", "annual"], date(2031, 1, 1),
    )  # fmt: skip
    assert last.created_by == "import"


def test_csv_cells_are_read_as_their_fields(
    sessions: sessionmaker[Session], tenant: str, tmp_path: Path
) -> None:
    header = ["title", "policy_type", "purpose", "business_units", "requires_acknowledgment",
              "custom_fields", "status", "review_frequency", "version"]  # fmt: skip
    path = write_csv(tmp_path / "cells.csv", header, [
        ["A", "Privacy", "", " bu-1 ; bu-2 ;", "Yes", '{"risk": "high", "n": 2}',
         "published", "annual", "2.0"],
        ["B", "Privacy", "  ", "", "0", "", "", "", ""],
    ])  # fmt: skip
    rows = read_import_file(path)
    assert rows[0]["business_units"] == ["bu-1", "bu-2"]
    assert rows[0]["requires_acknowledgment"] is True
    assert rows[0]["custom_fields"] == {"risk": "high", "n": 2}
    assert "purpose" not in rows[0]  # an empty cell leaves the field unset
    assert rows[1] == {"title": "B", "policy_type": "Privacy", "requires_acknowledgment": False}
    report = import_records(sessions, tenant_id=tenant, rows=rows, actor="alice")
    a, b = load(sessions, report.first_id), load(sessions, report.last_id)
    assert (a.status, a.published_date, a.version, a.review_frequency) == (
        "published", date.today(), "2.0", "annual",
    )  # fmt: skip
    assert (b.status, b.purpose, b.created_by) == ("draft", None, "alice")


def test_json_files_as_a_list_or_under_policies(
    sessions: sessionmaker[Session], tenant: str, tmp_path: Path
) -> None:
    items: list[dict[str, Any]] = [
        {"title": "J1", "policy_type": "Privacy", "tags": ["a", "b"], "custom_fields": {"k": [1]},
         "requires_acknowledgment": True, "effective_date": "2030-02-01"},
        {"title": "J2", "policy_type": "Privacy", "status": "approved"},
    ]  # fmt: skip
    (tmp_path / "list.json").write_text(json.dumps(items), encoding="utf-8")
    (tmp_path / "wrapped.data").write_text(json.dumps({"policies": items}), encoding="utf-8")
    assert read_import_file(tmp_path / "list.json") == items
    rows = read_import_file(tmp_path / "wrapped.data", fmt="json")
    report = import_records(sessions, tenant_id=tenant, rows=rows, chunk_size=1)
    assert (report.created, report.chunks) == (2, 2)
    first = load(sessions, report.first_id)
    assert (first.tags, first.custom_fields, first.effective_date) == (
        ["a", "b"], {"k": [1]}, date(2030, 2, 1),
    )  # fmt: skip
    assert load(sessions, report.last_id).status == "approved"


def test_bad_rows_name_every_row_and_write_nothing(
    sessions: sessionmaker[Session], tenant: str, tmp_path: Path
) -> None:
    good = ["Fine", "Privacy", "olivia", "draft", "", ""]
    path = write_csv(tmp_path / "mixed.csv", HEADER, [
        good, ["", "Privacy", "olivia", "", "", ""], good,
        ["Bad date", "Privacy", "olivia", "live", "", "2031-02-30"], good,
    ])  # fmt: skip
    rows = read_import_file(path)
    before = written(sessions)
    with pytest.raises(InvalidInputError) as caught:
        import_records(sessions, tenant_id=tenant, rows=rows, chunk_size=2)
    message = str(caught.value)
    assert message.startswith("rows: 2 invalid row(s): row 2: title: is required; row 4: ")
    assert (
        "row 4: next_review_date" in message and "row 4: status: unknown status 'live'" in message
    )
    assert "row 1" not in message and "row 3" not in message
    assert written(sessions) == before


def test_validate_rows_lists_at_most_ten_problems_but_counts_all() -> None:
    rows = [{"policy_type": "Privacy"}] * 12 + [{"title": "x", "policy_type": "y", "colour": 1}]
    with pytest.raises(InvalidInputError, match=r"^rows: 13 invalid row\(s\)") as caught:
        validate_rows(rows)
    assert str(caught.value).count("title: is required") == 10
    assert validate_rows([{"title": "t", "policy_type": "p", "status": "approved"}]) == [
        {"title": "t", "policy_type": "p", "status": "approved"}
    ]


def test_file_errors_name_the_file_and_column(tmp_path: Path) -> None:
    unknown = write_csv(
        tmp_path / "colour.csv", ["title", "policy_type", "colour"], [["a", "b", "c"]]
    )
    with pytest.raises(InvalidInputError, match=r"colour\.csv: unknown column 'colour'"):
        read_import_file(unknown)
    (tmp_path / "broken.json").write_text('[{"title": "a",', encoding="utf-8")
    with pytest.raises(InvalidInputError, match=r"broken\.json: not valid JSON"):
        read_import_file(tmp_path / "broken.json")
    (tmp_path / "scalar.json").write_text('{"title": "a"}', encoding="utf-8")
    with pytest.raises(InvalidInputError, match=r"scalar\.json: expected a list"):
        read_import_file(tmp_path / "scalar.json")
    with pytest.raises(InvalidInputError, match=r"missing\.csv: cannot read"):
        read_import_file(tmp_path / "missing.csv")
    (tmp_path / "latin1.csv").write_bytes("title,policy_type\nPol\xedtica,x\n".encode("latin-1"))
    with pytest.raises(InvalidInputError, match=r"latin1\.csv: cannot read"):
        read_import_file(tmp_path / "latin1.csv")
    with pytest.raises(InvalidInputError, match=r"unknown import format 'txt'"):
        read_import_file(tmp_path / "notes.txt")
    (tmp_path / "empty.csv").write_text("", encoding="utf-8")
    with pytest.raises(InvalidInputError, match=r"empty\.csv: empty file"):
        read_import_file(tmp_path / "empty.csv")
    cells = write_csv(tmp_path / "cells.csv", ["title", "policy_type", "custom_fields",
                                               "requires_acknowledgment"],
                      [["a", "b", "{nope", "maybe"], ["a", "b", "[1]", "no"]])  # fmt: skip
    with pytest.raises(InvalidInputError) as caught:
        read_import_file(cells)
    assert "2 unreadable row(s): row 1: custom_fields: not valid JSON" in str(caught.value)
    assert "row 1: requires_acknowledgment: expected true/false" in str(caught.value)
    assert "row 2: custom_fields: expected a JSON object" in str(caught.value)


def test_an_unknown_tenant_writes_nothing(sessions: sessionmaker[Session], tenant: str) -> None:
    before = written(sessions)
    with pytest.raises(NotFoundError, match="nowhere"):
        import_records(sessions, tenant_id="nowhere", rows=[{"title": "a", "policy_type": "b"}])
    with pytest.raises(InvalidInputError, match="chunk_size"):
        import_records(sessions, tenant_id=tenant, rows=[], chunk_size=0)
    assert written(sessions) == before
    assert import_records(sessions, tenant_id=tenant, rows=[]).created == 0


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_odd_unicode_and_a_megabyte_of_content_survive(
    sessions: sessionmaker[Session], tenant: str, tmp_path: Path, fmt: str
) -> None:
    content = ('Línea «1», "citada"; ∑ 🔒\r\n\ttab\n' * 40_000)[:1_000_000]
    assert len(content) == 1_000_000
    item = {"title": ODD_TITLE, "policy_type": "Privacy", "content": content,
            "tags": ["étiquette", "标签"]}  # fmt: skip
    path = tmp_path / f"odd.{fmt}"
    if fmt == "csv":
        write_csv(path, ["title", "policy_type", "content", "tags"],
                  [[ODD_TITLE, "Privacy", content, "étiquette;标签"]])  # fmt: skip
    else:
        path.write_text(json.dumps({"policies": [item]}, ensure_ascii=False), encoding="utf-8")
    rows = read_import_file(path)
    assert rows == [item]
    report = import_records(sessions, tenant_id=tenant, rows=rows)
    policy = load(sessions, report.first_id)
    assert (policy.title, policy.content, policy.tags) == (
        ODD_TITLE,
        content,
        ["étiquette", "标签"],
    )
