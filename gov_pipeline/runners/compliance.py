"""The compliance report: read in one transaction, computed (domain/compliance.py), and kept
as files (the report as JSON, its chart as SVG) in a directory, by default
`$GOV_PIPELINE_HOME/reports/compliance`."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from gov_pipeline.config import Settings
from gov_pipeline.db.engine import scope_to_tenant
from gov_pipeline.domain.charts import bar_chart_svg
from gov_pipeline.domain.compliance import ComplianceReport, compute_report
from gov_pipeline.services.compliance import read_facts
from gov_pipeline.services.tenants import require_tenant

REPORTS_DIR = Path("reports") / "compliance"  # under GOV_PIPELINE_HOME


def default_report_dir(settings: Settings) -> Path:
    return settings.home / REPORTS_DIR


def read_compliance_report(
    sessions: sessionmaker[Session], *, tenant_id: str | None = None, as_of: datetime | None = None
) -> ComplianceReport:
    """The report of `tenant_id` (None: every tenant) at `as_of` (default now).

    Raises:
        NotFoundError: no such tenant.
    """
    at = (as_of or datetime.now(UTC)).astimezone(UTC)
    with sessions.begin() as session:
        if tenant_id is not None:
            require_tenant(session, tenant_id)
            scope_to_tenant(session, tenant_id)
        facts = read_facts(session, tenant_id=tenant_id, today=at.date())
    return compute_report(facts, as_of=at, tenant_id=tenant_id)


def status_chart(report: ComplianceReport) -> str:
    """The report's policies by status as an SVG bar chart."""
    return bar_chart_svg(list(report.totals.policies_by_status.items()))


@dataclass(frozen=True)
class ReportFiles:
    report: Path
    chart: Path


def _write_whole(path: Path, text: str) -> None:
    """Write `path` through a temporary name: a reader never sees half a file."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def write_report_files(report: ComplianceReport, directory: Path) -> ReportFiles:
    """Write `compliance-<tenant or all>-<as_of>.json` and `.svg` to `directory` (made if
    missing); earlier reports stay beside them."""
    directory.mkdir(parents=True, exist_ok=True)
    scope = re.sub(r"[^A-Za-z0-9_.-]", "_", report.tenant_id or "all")
    stem = f"compliance-{scope}-{report.as_of.strftime('%Y%m%dT%H%M%SZ')}"
    files = ReportFiles(directory / f"{stem}.json", directory / f"{stem}.svg")
    _write_whole(files.chart, status_chart(report))
    data = {**report.to_dict(), "chart": files.chart.name}
    _write_whole(files.report, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    return files
