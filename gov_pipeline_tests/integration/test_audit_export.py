"""The audit export on both databases: exactly one tenant's rows of a period, in JSON Lines
and CSV that parse back to the stored values, SHA256SUMS that the real `sha256sum -c`
accepts (and rejects after tampering), progress on a larger export, and refusals (bad
period, a used directory) that leave nothing behind."""

from __future__ import annotations

import csv
import json
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from sqlalchemy import Engine, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from gov_pipeline.db.models import (
    ActionRun,
    Approval,
    ApprovalDecision,
    EntityChange,
    WorkflowExecution,
)
from gov_pipeline.domain.audit import Period
from gov_pipeline.domain.errors import InvalidInputError
from gov_pipeline.orchestration.audit import export_audit as export_audit_job
from gov_pipeline.orchestration.common import LANE_TAG
from gov_pipeline.orchestration.resources import DatabaseResource
from gov_pipeline.runners.audit_export import ExportProgress, export_audit
from gov_pipeline.services import approvals
from gov_pipeline.services.tenants import upsert_user
from gov_pipeline_tests.integration.engine_support import (
    APPROVAL_EXAMPLE,
    apply_yaml,
    cli_invoker,
    make_settings,
    move,
    new_policy,
    process,
)

START = datetime(2025, 1, 1, tzinfo=UTC)
END = datetime(2025, 2, 1, tzinfo=UTC)
PERIOD = Period(START, END)
# Where a seeded row's selecting time is put, in turn: the first two are in the period.
PLACES = [
    START,  # exactly at `from`: in
    START + timedelta(days=9, hours=3, microseconds=250_000),  # inside
    END,  # exactly at `to`: out
    START - timedelta(milliseconds=1),  # just before: out
    END + timedelta(days=3),  # after: out
]
IN = {0, 1}
MODELS = {
    "changes": (EntityChange, "created_at"),
    "executions": (WorkflowExecution, "created_at"),
    "action_runs": (ActionRun, "created_at"),
    "approvals": (Approval, "decided_at"),
    "decisions": (ApprovalDecision, "created_at"),
}
TITLE = 'Access, "control"; ü — line one'


def _decide_open_steps(sessions: sessionmaker[Session], tenant: str) -> None:
    with sessions.begin() as session:
        step = session.scalars(
            select(Approval).where(Approval.tenant_id == tenant, Approval.status == "pending")
        ).first()
        assert step is not None
        user = "carol" if step.step_index == 0 else "ciso"
        approvals.decide(session, tenant_id=tenant, approval_id=step.id, user_id=user,
                         decision="approve", comment="ok, \"fine\"")  # fmt: skip


def _seed_flows(sessions: sessionmaker[Session], db_url: str) -> None:
    """In each tenant: the example two-step approval, run and decided in both steps, on two
    policies (two executions of each tenant: the workflows a change skips are no rows)."""
    settings = make_settings(db_url)
    with sessions.begin() as session:
        for tenant in ("acme", "globex"):
            for user, role in (("carol", "compliance_officer"), ("ciso", "admin"),
                               ("olivia", "policy_owner")):  # fmt: skip
                upsert_user(session, tenant_id=tenant, user_id=user, roles=[role])
    for tenant in ("acme", "globex"):
        apply_yaml(sessions, APPROVAL_EXAMPLE, tenant_id=tenant)
        for _ in range(2):
            move(sessions, new_policy(sessions, tenant=tenant, title=TITLE), "in_review", tenant)
    process(sessions, settings)
    for _ in range(2):
        for tenant in ("acme", "globex"):
            _decide_open_steps(sessions, tenant)
        process(sessions, settings)


def _stamp(engine: Engine, model: Any, column: str, row_id: int, at: datetime) -> None:
    """Set a row's time as its writer would store it: on SQLite the capture triggers keep
    three fraction digits, the application six."""
    table = model.__table__
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite" and model is EntityChange:
            text_at = at.strftime("%Y-%m-%d %H:%M:%S.") + f"{at.microsecond // 1000:03d}"
            conn.exec_driver_sql(
                f"UPDATE {table.name} SET {column} = ? WHERE id = ?", (text_at, row_id)
            )
        else:
            conn.execute(update(table).where(table.c.id == row_id).values({column: at}))


# The order acme's rows of a kind take the places in: a kind of two rows gets one in the
# period and one exactly at its end. Every row of globex is put inside the period.
ACME_ORDER = [1, 2, 0, 3, 4]


def _place_rows(engine: Engine) -> dict[str, set[int]]:
    """Spread the rows over PLACES; the ids each kind must export for acme."""
    expected: dict[str, set[int]] = {}
    for kind, (model, column) in MODELS.items():
        table = model.__table__
        with engine.begin() as conn:
            rows = conn.execute(
                select(table.c.id, table.c.tenant_id, table.c[column]).order_by(table.c.id)
            ).all()
        expected[kind] = set()
        acme_rows = 0
        for row_id, tenant, at in rows:
            if at is None:
                continue  # an approval step not decided: in no period
            place = 1
            if tenant == "acme":
                place = ACME_ORDER[acme_rows % len(ACME_ORDER)]
                acme_rows += 1
                if place in IN:
                    expected[kind].add(row_id)
            _stamp(engine, model, column, row_id, PLACES[place])
        assert acme_rows >= 2, f"the seed has too few {kind} rows of acme"
    return expected


@pytest.fixture
def seeded(
    sessions: sessionmaker[Session], tenant: str, db_url: str, engine: Engine
) -> dict[str, set[int]]:
    _seed_flows(sessions, db_url)
    expected = _place_rows(engine)
    for kind in MODELS:
        assert expected[kind], f"the seed puts no {kind} row of acme in the period"
    return expected


def _stored(sessions: sessionmaker[Session], kind: str, ids: set[int]) -> dict[int, Any]:
    model, _ = MODELS[kind]
    with sessions.begin() as session:
        return {r.id: r for r in session.scalars(select(model).where(model.id.in_(ids)))}


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def _sha256sum(directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=directory, capture_output=True,
                          text=True, check=False)  # fmt: skip


def test_a_jsonl_export_holds_exactly_the_tenants_rows_of_the_period(
    sessions: sessionmaker[Session], seeded: dict[str, set[int]], tmp_path: Path
) -> None:
    out = tmp_path / "audit"
    report = export_audit(sessions, tenant_id="acme", period=PERIOD, out=out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["tenant_id"], manifest["format"]) == ("acme", "jsonl")
    assert (manifest["from"], manifest["to"]) == (START.isoformat(), END.isoformat())
    for kind, ids in seeded.items():
        rows = _read_jsonl(out / f"{kind}.jsonl")
        assert {r["id"] for r in rows} == ids, kind
        assert [r["id"] for r in rows] == sorted(ids)  # in id order
        assert {r["tenant_id"] for r in rows} == {"acme"}
        assert manifest["counts"][kind] == report.counts[kind] == len(ids)
        entry = next(f for f in manifest["files"] if f["kind"] == kind)
        assert all(list(r) == entry["columns"] for r in rows)  # every column, table order
    stored = _stored(sessions, "changes", seeded["changes"])
    for row in _read_jsonl(out / "changes.jsonl"):
        change = stored[row["id"]]
        assert (row["new_values"], row["changed_fields"]) == (change.new_values,
                                                              change.changed_fields)  # fmt: skip
        assert datetime.fromisoformat(row["created_at"]) == change.created_at
    titles = [(r["new_values"] or {}).get("title") for r in _read_jsonl(out / "changes.jsonl")]
    assert TITLE in titles  # quotes, commas, non-ASCII kept
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


def test_a_csv_export_parses_back_to_the_stored_values(
    sessions: sessionmaker[Session], seeded: dict[str, set[int]], tmp_path: Path
) -> None:
    out = tmp_path / "audit-csv"
    export_audit(sessions, tenant_id="acme", period=PERIOD, out=out, fmt="csv")
    manifest = json.loads((out / "manifest.json").read_text())
    for kind, ids in seeded.items():
        header, rows = _read_csv(out / f"{kind}.csv")
        entry = next(f for f in manifest["files"] if f["kind"] == kind)
        assert header == entry["columns"], kind
        assert {int(r["id"]) for r in rows} == ids, kind
    stored = _stored(sessions, "decisions", seeded["decisions"])
    for row in _read_csv(out / "decisions.csv")[1]:
        decision = stored[int(row["id"])]
        assert row["comment"] == decision.comment == 'ok, "fine"'
        assert row["signature"] == "" and decision.signature is None  # null: an empty cell
    changes = _stored(sessions, "changes", seeded["changes"])
    for row in _read_csv(out / "changes.csv")[1]:
        change = changes[int(row["id"])]
        assert json.loads(row["new_values"]) == change.new_values  # JSON columns: JSON text
        assert json.loads(row["changed_fields"]) == change.changed_fields
        assert datetime.fromisoformat(row["created_at"]) == change.created_at


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_sha256sum_verifies_the_export_and_catches_tampering(
    sessions: sessionmaker[Session], seeded: dict[str, set[int]], tmp_path: Path, fmt: str
) -> None:
    out = tmp_path / "audit"
    export_audit(sessions, tenant_id="acme", period=PERIOD, out=out, fmt=fmt)
    listed = [line.split("  ", 1)[1] for line in (out / "SHA256SUMS").read_text().splitlines()]
    assert sorted(listed) == sorted(p.name for p in out.iterdir() if p.name != "SHA256SUMS")
    checked = _sha256sum(out)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count(": OK") == len(listed)
    target = out / f"changes.{fmt}"
    target.write_bytes(target.read_bytes().replace(b"acme", b"acmf", 1))
    tampered = _sha256sum(out)
    assert tampered.returncode != 0
    assert f"changes.{fmt}: FAILED" in tampered.stdout


def _bulk_changes(engine: Engine, count: int, inside: datetime) -> None:
    """`count` changes of acme in the period, in one executemany."""
    rows = [
        {"tenant_id": "acme", "entity_type": "policy", "entity_id": str(n % 50 + 1),
         "kind": "updated", "old_values": {"title": f"t{n}"}, "new_values": {"title": f"t{n + 1}"},
         "changed_fields": ["title"], "actor": "bulk", "chain_depth": 0,
         "created_at": inside + timedelta(seconds=n)}
        for n in range(count)
    ]  # fmt: skip
    with engine.begin() as conn:
        conn.execute(insert(EntityChange.__table__), rows)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], db_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("GOV_PIPELINE_DATABASE_URL", db_url)
    monkeypatch.delenv("GOV_PIPELINE_TENANT", raising=False)
    return cli_invoker(capsys)


def test_a_larger_export_reports_its_progress_on_stderr(
    tenant: str, engine: Engine, tmp_path: Path, cli: Any
) -> None:
    _bulk_changes(engine, 12_000, START + timedelta(hours=1))
    _bulk_changes(engine, 10, END + timedelta(hours=1))  # after the period
    out = tmp_path / "big"
    code, stdout, stderr = cli("audit", "export", "--tenant", "acme", "--from", "2025-01-01",
                               "--to", "2025-02-01", "--out", str(out))  # fmt: skip
    assert code == 0, stderr
    lines = stderr.splitlines()
    # Every 5000 rows of a kind (or 5 s: a slow machine may add lines), then its total.
    reported = [int(line.split()[1]) for line in lines if line.strip().startswith("changes:")]
    assert {5000, 10000} <= set(reported) and reported == sorted(reported), lines
    assert reported[-1] == 12000 and "changes: 12000 row(s) done" in stderr
    assert lines[-1].strip().startswith("decisions: 0 row(s) done")
    assert f"exported 12000 row(s) to {out}" in stdout
    assert sum(1 for _ in (out / "changes.jsonl").open()) == 12_000
    assert _sha256sum(out).returncode == 0


def test_progress_comes_every_n_rows_to_the_callback(
    sessions: sessionmaker[Session], tenant: str, engine: Engine, tmp_path: Path
) -> None:
    _bulk_changes(engine, 2_500, START)
    seen: list[ExportProgress] = []
    export_audit(sessions, tenant_id="acme", period=PERIOD, out=tmp_path / "x", page_size=300,
                 on_progress=seen.append, progress_rows=1000, progress_seconds=3600)  # fmt: skip
    changes = [(p.rows, p.done) for p in seen if p.kind == "changes"]
    assert changes == [(1200, False), (2400, False), (2500, True)]  # at page ends
    assert [p.kind for p in seen if p.done] == list(MODELS)
    assert seen[-1].total_rows == 2500


@pytest.fixture
def exports(tmp_path: Path) -> Path:
    """A directory for the exports alone (the SQLite database lives in tmp_path)."""
    path = tmp_path / "exports"
    path.mkdir()
    return path


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        ("2025-02-01", "2025-01-01", "period: --from 2025-02-01T00:00:00+00:00 must be before"),
        ("2025-01-01", "2025-01-01", "must be before --to 2025-01-01T00:00:00+00:00"),
        ("01/02/2025", "2025-03-01", "--from: expected a date (YYYY-MM-DD) or an ISO datetime"),
        ("2025-01-01", "next week", "--to: expected a date"),
    ],
)
def test_a_bad_period_is_refused_with_a_usage_error(
    tenant: str, exports: Path, cli: Any, start: str, end: str, message: str
) -> None:
    out = exports / "never"
    code, _, stderr = cli("audit", "export", "-t", "acme", "--from", start, "--to", end,
                          "--out", str(out))  # fmt: skip
    assert code == 2 and message in stderr, stderr
    assert not out.exists() and list(exports.iterdir()) == []


def test_a_used_directory_is_refused_and_force_replaces_only_an_export(
    sessions: sessionmaker[Session], tenant: str, engine: Engine, exports: Path, cli: Any
) -> None:
    _bulk_changes(engine, 3, START)
    args = ["audit", "export", "-t", "acme", "--from", "2025-01-01", "--to", "2025-02-01"]
    notes = exports / "notes"
    notes.mkdir()
    (notes / "keep.txt").write_text("mine")
    code, _, stderr = cli(*args, "--out", str(notes))
    assert code == 2 and "is not empty: name a new directory, or pass --force" in stderr
    code, _, stderr = cli(*args, "--out", str(notes), "--force")
    assert code == 2 and "holds no audit export (manifest.json)" in stderr
    assert (notes / "keep.txt").read_text() == "mine"

    out = exports / "jan"
    assert cli(*args, "--out", str(out))[0] == 0
    code, _, stderr = cli(*args, "--out", str(out), "--format", "csv")
    assert code == 2 and "pass --force" in stderr
    assert (out / "changes.jsonl").is_file()  # the first export stays
    assert cli(*args, "--out", str(out), "--format", "csv", "--force")[0] == 0
    assert (out / "changes.csv").is_file() and not (out / "changes.jsonl").exists()
    assert _sha256sum(out).returncode == 0
    assert sorted(p.name for p in exports.iterdir()) == ["jan", "notes"]  # nothing aside

    with pytest.raises(InvalidInputError, match="exists and is not a directory"):
        export_audit(sessions, tenant_id="acme", period=PERIOD, out=notes / "keep.txt")
    code, _, stderr = cli("audit", "export", "-t", "nobody", "--from", "2025-01-01", "--to",
                          "2025-02-01", "--out", str(exports / "n"))  # fmt: skip
    assert code == 1 and "tenant 'nobody' not found" in stderr


def test_an_export_that_fails_midway_leaves_nothing_that_looks_complete(
    sessions: sessionmaker[Session], tenant: str, engine: Engine, exports: Path
) -> None:
    _bulk_changes(engine, 50, START)

    def fail_after_changes(p: ExportProgress) -> None:
        if p.kind == "changes" and p.done:
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        export_audit(sessions, tenant_id="acme", period=PERIOD, out=exports / "half",
                     on_progress=fail_after_changes)  # fmt: skip
    assert list(exports.iterdir()) == []


def test_on_postgres_every_file_shows_the_moment_the_export_began(
    sessions: sessionmaker[Session], tenant: str, engine: Engine, exports: Path, is_pg: bool
) -> None:
    _bulk_changes(engine, 5, START)

    def decide_meanwhile(p: ExportProgress) -> None:
        if p.kind == "changes" and p.done:  # committed before decisions.jsonl is read
            with engine.begin() as conn:
                conn.execute(
                    insert(ApprovalDecision.__table__).values(
                        tenant_id="acme", approval_id=1, decided_by="ciso", decision="approve",
                        created_at=START + timedelta(hours=2),
                    )
                )  # fmt: skip

    export_audit(sessions, tenant_id="acme", period=PERIOD, out=exports / "a",
                 on_progress=decide_meanwhile)  # fmt: skip
    manifest = json.loads((exports / "a" / "manifest.json").read_text())
    # PostgreSQL: one repeatable-read snapshot. SQLite: a transaction per page (documented).
    assert manifest["consistency"] == ("snapshot" if is_pg else "per_page")
    assert manifest["counts"]["decisions"] == (0 if is_pg else 1)


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


def test_the_export_job_runs_on_the_export_lane_and_logs_progress(
    db_url: str, tenant: str, engine: Engine, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    assert export_audit_job.tags[LANE_TAG] == "export"
    _bulk_changes(engine, 7, START)
    config = {"tenant_id": "acme", "from": "2025-01-01", "to": "2025-02-01T00:00:00Z",
              "format": "csv", "out": str(tmp_path / "job")}  # fmt: skip
    result = export_audit_job.execute_in_process(
        run_config={"ops": {"export_audit_records": {"config": config}}},
        resources={"database": DatabaseResource(url=db_url)}, instance=instance,
    )  # fmt: skip
    assert result.success
    (output,) = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    metadata = output.event_specific_data.metadata  # type: ignore[union-attr]
    assert (metadata["rows"].value, metadata["rows changes"].value) == (7, 7)
    logged = [r.user_message for r in instance.all_logs(result.run_id)]
    assert any(m.startswith("changes: 7 row(s) done") for m in logged), logged
    assert _sha256sum(tmp_path / "job").returncode == 0
    bad = export_audit_job.execute_in_process(
        run_config={"ops": {"export_audit_records": {"config": {**config, "to": "2024-01-01"}}}},
        resources={"database": DatabaseResource(url=db_url)}, instance=instance,
        raise_on_error=False,
    )  # fmt: skip
    assert not bad.success
    failure = next(e for e in bad.all_events if e.event_type_value == "STEP_FAILURE")
    assert "must be before" in str(failure.event_specific_data.error)  # type: ignore[union-attr]
