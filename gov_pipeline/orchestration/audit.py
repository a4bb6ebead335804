"""`export_audit`: one tenant's records of a period written to a directory as JSON Lines or
CSV with a manifest and SHA256SUMS (runners/audit_export.py), on the `export` lane, with
progress in the run's log."""

# No "from __future__ import annotations": Dagster reads op and config annotations at runtime.

from pathlib import Path

import dagster as dg
from pydantic import Field

from gov_pipeline.domain.audit import DATE_HELP, Period
from gov_pipeline.orchestration.common import LANE_TAG, permanent_errors
from gov_pipeline.orchestration.heartbeat import beating_in_process_executor
from gov_pipeline.orchestration.resources import DatabaseResource
from gov_pipeline.runners import audit_export


class AuditExportConfig(dg.Config):
    """The tenant, the period [from, to), the format (jsonl or csv) and the directory (on
    the host the run executes on; refused when not empty unless `force`)."""

    tenant_id: str
    from_: str = Field(alias="from", description=f"Start, included: {DATE_HELP}.")
    to: str = Field(description=f"End, excluded: {DATE_HELP}.")
    format: str = Field(default="jsonl", description="jsonl or csv.")
    out: str = Field(description="The export directory (absolute: the run's working "
                     "directory is the code location's).")  # fmt: skip
    force: bool = Field(default=False, description="Replace an earlier export in `out`.")


@dg.op
def export_audit_records(
    context: dg.OpExecutionContext, config: AuditExportConfig, database: DatabaseResource
) -> None:
    """Write the export, logging rows written per kind as it goes."""

    def progress(p: audit_export.ExportProgress) -> None:
        state = "done" if p.done else "so far"
        context.log.info(
            f"{p.kind}: {p.rows} row(s) {state}; {p.total_rows} in all, {p.rows_per_s:.0f} rows/s"
        )

    with permanent_errors():
        report = audit_export.export_audit(
            database.sessions(), tenant_id=config.tenant_id,
            period=Period.parse(config.from_, config.to), out=Path(config.out),
            fmt=config.format, force=config.force, on_progress=progress,
        )  # fmt: skip
    context.log.info(f"exported {report.rows} row(s) to {report.out} in {report.seconds:.2f}s")
    context.add_output_metadata(
        {
            "out": dg.MetadataValue.path(str(report.out)),
            "format": str(report.fmt),
            "rows": report.rows,
            **{f"rows {kind}": n for kind, n in report.counts.items()},
            "seconds": round(report.seconds, 3),
        }
    )


@dg.job(
    executor_def=beating_in_process_executor,
    tags={LANE_TAG: "export"},
    description="Audit export of one tenant's changes, executions, action runs, approvals and "
    "decisions of a period [from, to) to a directory, JSON Lines or CSV, with SHA256SUMS.",
)
def export_audit() -> None:
    export_audit_records()
