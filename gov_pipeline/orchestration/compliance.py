"""The `compliance_report` asset (group `compliance`): policies by status, overdue reviews,
approval turnaround and SLA breaches (domain/compliance.py) as metadata, with a bar chart of
the policies by status shown inline by the UI; the report and the chart also kept as files.
Materialized by the job `report_compliance`, on the `reporting` lane."""

# No "from __future__ import annotations": Dagster reads asset and config annotations at runtime.

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from gov_pipeline.domain.charts import markdown_image
from gov_pipeline.domain.compliance import ComplianceReport, Figures, figure_rows, overdue_items
from gov_pipeline.orchestration.common import LANE_TAG, permanent_errors
from gov_pipeline.orchestration.heartbeat import beating_in_process_executor
from gov_pipeline.orchestration.resources import DatabaseResource
from gov_pipeline.runners.compliance import (
    default_report_dir,
    read_compliance_report,
    status_chart,
    write_report_files,
)

GROUP = "compliance"
TABLE_ROWS = 200


class ComplianceReportConfig(dg.Config):
    """Which tenant (none: all of them) and where the files go."""

    tenant_id: str | None = Field(default=None, description="One tenant; empty: all tenants.")
    out: str | None = Field(
        default=None, description="Directory of the report files; empty: "
        "$GOV_PIPELINE_HOME/reports/compliance.",
    )  # fmt: skip


def _strings(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> dg.MetadataValue:
    schema = dg.TableSchema(columns=[dg.TableColumn(c, "string") for c in columns])
    records = [dg.TableRecord({c: str(r.get(c, "")) for c in columns}) for r in rows[:TABLE_ROWS]]
    return dg.MetadataValue.table(records=records, schema=schema)


def _hours(value: float | None) -> dg.MetadataValue:
    return dg.MetadataValue.null() if value is None else dg.MetadataValue.float(round(value, 2))


def _tenant_row(tenant: str, f: Figures) -> dict[str, Any]:
    median, p90 = f.turnaround.median_h, f.turnaround.p90_h
    return {
        "tenant": tenant, "policies": f.policies, "overdue_reviews": len(f.overdue_reviews),
        "approvals_decided": f.turnaround.decided,
        "median_h": "-" if median is None else f"{median:.1f}",
        "p90_h": "-" if p90 is None else f"{p90:.1f}", "sla_breaches": f.sla.total,
    }  # fmt: skip


def report_metadata(report: ComplianceReport) -> dict[str, Any]:
    """The materialization's metadata: each figure plain (the UI plots it over time), the
    `figures` table, the chart as a markdown image, the overdue reviews and the tenants."""
    f = report.totals
    return {
        "scope": dg.MetadataValue.text(report.scope),
        "as_of": dg.MetadataValue.timestamp(report.as_of),
        "policies": f.policies,
        **{f"policies {s}": n for s, n in f.policies_by_status.items()},
        "overdue_reviews": len(f.overdue_reviews),
        "approvals_decided": f.turnaround.decided,
        "turnaround_median_h": _hours(f.turnaround.median_h),
        "turnaround_p90_h": _hours(f.turnaround.p90_h),
        "sla_breaches": f.sla.total,
        "figures": _strings(
            [{"figure": k, "value": v} for k, v in figure_rows(report)], ["figure", "value"]
        ),
        "policies_by_status_chart": dg.MetadataValue.md(
            markdown_image("Policies by status", status_chart(report))
        ),
        "overdue": _strings(
            overdue_items(f),
            ["tenant_id", "record", "title", "status", "next_review_date", "days_overdue"],
        ),
        "by_tenant": _strings(
            [_tenant_row(t, tf) for t, tf in report.by_tenant.items()],
            [
                "tenant",
                "policies",
                "overdue_reviews",
                "approvals_decided",
                "median_h",
                "p90_h",
                "sla_breaches",
            ],
        ),
    }


@dg.asset(
    group_name=GROUP,
    # The Catalog's Materialize runs this in an asset job without run tags: the run coordinator
    # gives such a run the lane its ops share.
    op_tags={LANE_TAG: "reporting"},
    description="Policies by status (with a chart), overdue reviews of policies, SOPs and "
    "risks, approval turnaround (median, p90) and SLA breaches; also written as JSON and SVG.",
)
def compliance_report(
    context: dg.AssetExecutionContext, config: ComplianceReportConfig, database: DatabaseResource
) -> dg.MaterializeResult[None]:
    """Compute the report, keep its files, and show it."""
    with permanent_errors():
        report = read_compliance_report(database.sessions(), tenant_id=config.tenant_id or None)
    directory = Path(config.out) if config.out else default_report_dir(database.settings())
    files = write_report_files(report, directory)
    context.log.info(f"compliance report of {report.scope} written to {files.report}")
    return dg.MaterializeResult(
        metadata={
            **report_metadata(report),
            "report_file": dg.MetadataValue.path(str(files.report)),
            "chart_file": dg.MetadataValue.path(str(files.chart)),
        }
    )


report_compliance = dg.define_asset_job(
    "report_compliance",
    selection=[compliance_report],
    executor_def=beating_in_process_executor,
    tags={LANE_TAG: "reporting"},
    description="Materialize the compliance report (config: tenant_id, out), on the "
    "reporting lane.",
)
