"""The compliance report on both databases: its figures against seeded data whose answers
are computed here from the seeded times (statistics.median, statistics.quantiles), the
`compliance_report` asset's metadata (a figures table, a chart the UI shows inline, files),
and `gov-pipeline report compliance`."""

from __future__ import annotations

import base64
import json
import re
import statistics
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from sqlalchemy import Engine, insert, select
from sqlalchemy.orm import Session, sessionmaker

from gov_pipeline.db.models import Approval, Workflow, WorkflowExecution
from gov_pipeline.domain.charts import PLOT_HEIGHT
from gov_pipeline.orchestration.common import LANE_TAG
from gov_pipeline.orchestration.compliance import compliance_report, report_compliance
from gov_pipeline.orchestration.resources import DatabaseResource
from gov_pipeline.runners.compliance import read_compliance_report
from gov_pipeline.services import records
from gov_pipeline_tests.integration.engine_support import (
    APPROVAL_EXAMPLE,
    apply_yaml,
    cli_invoker,
)

SVG = "{http://www.w3.org/2000/svg}"
AS_OF = datetime.now(UTC).replace(microsecond=0)
TODAY = AS_OF.date()
STATUSES = ["draft", "in_review", "approved", "published", "archived"]


@dataclass(frozen=True)
class Record:
    tenant: str
    entity_type: str
    status: str
    review_in_days: int | None  # next_review_date - today
    deleted: bool = False


RECORDS = [
    Record("acme", "policy", "draft", -30),
    Record("acme", "policy", "draft", None),
    Record("acme", "policy", "draft", -5, deleted=True),
    Record("acme", "policy", "in_review", 0),  # due today: not overdue yet
    Record("acme", "policy", "published", -1),
    Record("acme", "policy", "published", 10),
    Record("acme", "policy", "archived", -100),  # archived: no review needed
    Record("acme", "policy", "approved", None),
    Record("globex", "policy", "draft", -3),
    Record("globex", "policy", "published", None),
    Record("globex", "policy", "published", 2),
    Record("globex", "policy", "published", None),
    Record("acme", "sop", "draft", -7),
    Record("acme", "sop", "archived", -50),
    Record("acme", "sop", "published", 1),
    Record("acme", "risk", "identified", -2),
    Record("acme", "risk", "closed", -9),  # closed: no review needed
    Record("acme", "risk", "monitored", None),
    Record("globex", "risk", "assessed", -1),
]


@dataclass(frozen=True)
class Step:
    """An approval step, its times in hours from AS_OF (`asked` None: requested_at empty,
    created `created` hours before)."""

    tenant: str
    status: str
    asked: float | None
    decided: float | None = None
    due: float | None = None
    created: float = -500.0


STEPS = [
    Step("acme", "approved", -100, -99, -98),  # 1 h, on time
    Step("acme", "approved", -100, -98, -99),  # 2 h, late
    Step("acme", "rejected", -50, -47),  # 3 h, no due time
    Step("acme", "changes_requested", -60, -55, -58),  # 5 h, late
    Step("acme", "approved", -30, -22, -6),  # 8 h, on time
    Step("acme", "approved", -40, -27, -39),  # 13 h, late
    Step("acme", "approved", None, -50, -70, created=-80),  # 30 h from its creation, late
    Step("acme", "approved", -2, 1, -1),  # decided after AS_OF: not counted
    Step("acme", "pending", -10, due=-1),  # open past due
    Step("acme", "pending", -10, due=-5),  # open past due
    Step("acme", "pending", -1, due=5),
    Step("acme", "waiting", None),
    Step("acme", "skipped", None, due=-20),  # closed without a decision
    Step("acme", "withdrawn", -30, due=-20),
    Step("globex", "approved", -200, -100, -150),  # 100 h, late
    Step("globex", "pending", -20, due=-3),  # open past due
]
DECIDED = {"approved", "rejected", "changes_requested"}


def _at(hours: float | None) -> datetime | None:
    return None if hours is None else AS_OF + timedelta(hours=hours)


def _seed_records(sessions: sessionmaker[Session]) -> None:
    fields = {"policy": {"policy_type": "Security"}, "sop": {"process_area": "HR"},
              "risk": {"category": "operational"}}  # fmt: skip
    for n, r in enumerate(RECORDS):
        values: dict[str, Any] = {"title": f"{r.entity_type} {n}", "status": r.status,
                                  **fields[r.entity_type]}  # fmt: skip
        if r.review_in_days is not None:
            values["next_review_date"] = (TODAY + timedelta(days=r.review_in_days)).isoformat()
        with sessions.begin() as session:
            record = records.create_record(
                session, r.entity_type, tenant_id=r.tenant, fields=values, importing=True
            )
            if r.deleted:
                records.soft_delete_record(
                    session, r.entity_type, tenant_id=r.tenant, record_id=record.id
                )


def _seed_steps(sessions: sessionmaker[Session], engine: Engine) -> None:
    for tenant in ("acme", "globex"):
        apply_yaml(sessions, APPROVAL_EXAMPLE, tenant_id=tenant)
    with engine.begin() as conn:
        executions = {}
        for tenant in ("acme", "globex"):
            workflow = conn.execute(select(Workflow.id).where(Workflow.tenant_id == tenant))
            executions[tenant] = conn.execute(
                insert(WorkflowExecution.__table__).returning(WorkflowExecution.__table__.c.id),
                {"tenant_id": tenant, "workflow_id": workflow.scalar_one(), "workflow_version": 1,
                 "dedupe_key": f"manual:{tenant}", "entity_type": "policy", "entity_id": "1",
                 "status": "awaiting_approval"},
            ).scalar_one()  # fmt: skip
        for index, s in enumerate(STEPS):
            conn.execute(
                insert(Approval.__table__),
                {"tenant_id": s.tenant, "execution_id": executions[s.tenant], "step_index": index,
                 "entity_type": "policy", "entity_id": "1", "mode": "sequential",
                 "status": s.status, "requested_at": _at(s.asked), "decided_at": _at(s.decided),
                 "due_at": _at(s.due), "created_at": _at(s.created),
                 "decided_by": "carol" if s.decided is not None else None},
            )  # fmt: skip


@pytest.fixture
def seeded(sessions: sessionmaker[Session], tenant: str, engine: Engine) -> None:
    _seed_records(sessions)
    _seed_steps(sessions, engine)


def expected(tenant: str | None) -> dict[str, Any]:
    """The figures, worked out from RECORDS and STEPS alone."""
    mine = [r for r in RECORDS if tenant in (None, r.tenant)]
    steps = [s for s in STEPS if tenant in (None, s.tenant)]
    closed = {"policy": "archived", "sop": "archived", "risk": "closed"}
    by_status = {s: 0 for s in STATUSES}
    for r in mine:
        if r.entity_type == "policy" and not r.deleted:
            by_status[r.status] += 1
    overdue = [r for r in mine if not r.deleted and r.review_in_days is not None
               and r.review_in_days < 0 and r.status != closed[r.entity_type]]  # fmt: skip
    decided = [s for s in steps if s.status in DECIDED and s.decided is not None
               and s.decided <= 0]  # fmt: skip
    hours = [s.decided - (s.asked if s.asked is not None else s.created) for s in decided]  # type: ignore[operator]
    late = [s for s in decided if s.due is not None and s.decided > s.due]  # type: ignore[operator]
    past_due = [s for s in steps if s.status in ("pending", "waiting") and s.due is not None
                and s.due < 0]  # fmt: skip
    return {
        "policies_by_status": by_status,
        "overdue_days": sorted(-r.review_in_days for r in overdue),  # type: ignore[operator]
        "decided": len(hours),
        "median": statistics.median(hours),
        # One value is every quantile of itself (quantiles() wants two).
        "p90": statistics.quantiles(hours, n=10, method="inclusive")[8]
        if len(hours) > 1
        else hours[0],
        "late": len(late),
        "past_due": len(past_due),
    }


def _check(figures: Any, want: dict[str, Any]) -> None:
    assert figures.policies_by_status == want["policies_by_status"]
    assert sorted(o.days_overdue for o in figures.overdue_reviews) == want["overdue_days"]
    assert figures.turnaround.decided == want["decided"]
    assert figures.turnaround.median_h == pytest.approx(want["median"])
    assert figures.turnaround.p90_h == pytest.approx(want["p90"])
    assert (figures.sla.decided_late, figures.sla.open_past_due) == (want["late"], want["past_due"])


def test_the_figures_are_those_of_the_seeded_data(
    sessions: sessionmaker[Session], seeded: None
) -> None:
    acme = read_compliance_report(sessions, tenant_id="acme", as_of=AS_OF)
    assert expected("acme")["overdue_days"] == [1, 2, 7, 30]  # the seed is what it says
    _check(acme.totals, expected("acme"))
    assert [o.review.entity_type for o in acme.totals.overdue_reviews] == [
        "policy", "sop", "risk", "policy"
    ]  # oldest review date first  # fmt: skip
    assert list(acme.by_tenant) == ["acme"]
    every = read_compliance_report(sessions, as_of=AS_OF)
    _check(every.totals, expected(None))
    _check(every.by_tenant["acme"], expected("acme"))
    _check(every.by_tenant["globex"], expected("globex"))
    assert (
        every.to_dict()["sla_breaches"]["total"]
        == expected(None)["late"] + expected(None)["past_due"]
    )
    # Later, the step decided after AS_OF counts (1 + 2 = 3 h) and more reviews are due.
    later = read_compliance_report(sessions, tenant_id="acme", as_of=AS_OF + timedelta(days=3))
    assert later.totals.turnaround.decided == expected("acme")["decided"] + 1
    assert len(later.totals.overdue_reviews) == 6  # the in_review policy and the SOP of +1 day


def _chart(markdown: str) -> ET.Element:
    found = re.fullmatch(r"!\[Policies by status\]\(data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)\)",
                         markdown)  # fmt: skip
    assert found, markdown[:120]
    return ET.fromstring(base64.b64decode(found.group(1)))


def _bars(svg: ET.Element) -> list[int]:
    (group,) = [g for g in svg.iter(f"{SVG}g") if g.get("id") == "bars"]
    return [int(r.get("height", "-1")) for r in group.iter(f"{SVG}rect")]


def test_the_asset_shows_the_figures_and_a_chart_of_the_policies_by_status(
    db_url: str, seeded: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert report_compliance.tags[LANE_TAG] == "reporting"
    monkeypatch.setenv("GOV_PIPELINE_HOME", str(tmp_path / "home"))
    with dg.instance_for_test() as instance:
        result = dg.materialize([compliance_report], instance=instance,
                                resources={"database": DatabaseResource(url=db_url)})  # fmt: skip
    assert result.success
    (event,) = result.get_asset_materialization_events()
    metadata = event.materialization.metadata
    want = expected(None)
    assert metadata["policies"].value == sum(want["policies_by_status"].values())
    assert metadata["sla_breaches"].value == want["late"] + want["past_due"]
    assert metadata["turnaround_p90_h"].value == pytest.approx(want["p90"], abs=0.01)
    table = metadata["figures"]
    assert isinstance(table, dg.TableMetadataValue)
    rows = {r.data["figure"]: r.data["value"] for r in table.records}
    assert rows["policies published"] == str(want["policies_by_status"]["published"])
    assert rows["overdue reviews"] == str(len(want["overdue_days"]))
    assert rows["turnaround median (h)"] == f"{want['median']:.1f}"
    chart = metadata["policies_by_status_chart"]
    assert isinstance(chart, dg.MarkdownMetadataValue)
    # Shown inline on the asset's page: the UI expands markdown of fewer than 1000 characters.
    assert len(chart.md_str or "") < 1000
    svg = _chart(chart.md_str or "")
    counts = [want["policies_by_status"][s] for s in STATUSES]
    assert _bars(svg) == [round(PLOT_HEIGHT * n / max(counts)) for n in counts]
    labels = [t.text for t in svg.iter(f"{SVG}text")]
    assert labels == [f"{s}: {n}" for s, n in zip(STATUSES, counts, strict=True)]
    # The files, in the default directory under GOV_PIPELINE_HOME.
    report_file = Path(str(metadata["report_file"].value))
    assert report_file.parent == tmp_path / "home" / "reports" / "compliance"
    saved = json.loads(report_file.read_text())
    assert saved["policies_by_status"] == want["policies_by_status"]
    assert saved["approval_turnaround_hours"]["median"] == round(want["median"], 2)
    assert _bars(ET.parse(str(metadata["chart_file"].value)).getroot()) == _bars(svg)


def test_the_report_job_takes_a_tenant_and_a_directory(
    db_url: str, seeded: None, tmp_path: Path
) -> None:
    from gov_pipeline.definitions import defs

    repo = defs.get_repository_def()
    assert repo.has_job("report_compliance") and repo.has_job("export_audit")
    assert "compliance_report" in {
        k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()
    }
    job = dg.Definitions(
        assets=[compliance_report], jobs=[report_compliance],
        resources={"database": DatabaseResource(url=db_url)},
    ).resolve_job_def("report_compliance")  # fmt: skip
    config = {"tenant_id": "globex", "out": str(tmp_path / "out")}
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(
            run_config={"ops": {"compliance_report": {"config": config}}}, instance=instance
        )
        assert result.success
        run = instance.get_run_by_id(result.run_id)
        assert run is not None and run.tags[LANE_TAG] == "reporting"
    (event,) = result.get_asset_materialization_events()
    assert event.materialization.metadata["scope"].value == "globex"
    (saved,) = (tmp_path / "out").glob("compliance-globex-*.json")
    assert json.loads(saved.read_text())["sla_breaches"]["total"] == 2  # globex: 1 late, 1 open


def test_the_cli_prints_the_figures(
    seeded: None, db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("GOV_PIPELINE_DATABASE_URL", db_url)
    cli = cli_invoker(capsys)
    want = expected("acme")
    code, out, err = cli("report", "compliance", "--tenant", "acme", "--json", "--out",
                         str(tmp_path / "r"))  # fmt: skip
    assert code == 0, err
    data = json.loads(out)
    assert data["policies_by_status"] == want["policies_by_status"]
    assert data["overdue_reviews"]["total"] == len(want["overdue_days"])
    assert data["overdue_reviews"]["by_entity_type"] == {"policy": 2, "sop": 1, "risk": 1}
    assert data["approval_turnaround_hours"] == {
        "decided": want["decided"], "median": round(want["median"], 2),
        "p90": round(want["p90"], 2),
    }  # fmt: skip
    assert data["sla_breaches"]["decided_late"] == want["late"]
    assert Path(data["files"]["chart"]).is_file() and Path(data["files"]["report"]).is_file()
    code, out, err = cli("report", "compliance")
    assert code == 0, err
    assert out.startswith("compliance report of all tenants as of ")
    every = expected(None)
    assert re.search(rf"^SLA breaches\s+{every['late'] + every['past_due']}$", out, flags=re.M)
    assert re.search(r"^acme\s+policy \d+\s+policy 0\s+\S+\s+30$", out, flags=re.M), out
    code, _, err = cli("report", "compliance", "-t", "nobody")
    assert code == 1 and "tenant 'nobody' not found" in err


def test_no_decided_step_gives_no_turnaround(sessions: sessionmaker[Session], tenant: str) -> None:
    report = read_compliance_report(sessions, tenant_id="acme", as_of=AS_OF)
    assert report.totals.turnaround.decided == 0
    assert report.totals.turnaround.median_h is None
    assert report.to_dict()["approval_turnaround_hours"] == {"decided": 0, "median": None,
                                                             "p90": None}  # fmt: skip
    assert report.totals.policies_by_status == {s: 0 for s in STATUSES}


def test_the_default_tenant_setting_does_not_narrow_the_report(
    seeded: None, db_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOV_PIPELINE_DATABASE_URL", db_url)
    monkeypatch.setenv("GOV_PIPELINE_TENANT", "acme")
    code, out, _ = cli_invoker(capsys)("report", "compliance", "--json")
    assert code == 0 and json.loads(out)["tenant_id"] is None
    assert set(json.loads(out)["by_tenant"]) == {"acme", "globex"}
    assert date.fromisoformat(json.loads(out)["as_of"][:10]) >= TODAY
