"""`import_records`: a CSV or JSON file of records of one entity type (policies by default),
validated whole, created in chunks with progress in the run's log."""

# No "from __future__ import annotations": Dagster reads op and config annotations at runtime.

from pathlib import Path

import dagster as dg

from gov_pipeline.domain.entities import kind_of
from gov_pipeline.domain.errors import InvalidInputError
from gov_pipeline.orchestration.common import LANE_TAG, lane_retries, permanent_errors
from gov_pipeline.orchestration.heartbeat import beating_in_process_executor
from gov_pipeline.orchestration.resources import DatabaseResource
from gov_pipeline.runners import importer


class ImportConfig(dg.Config):
    """A CSV or JSON file of records to create in a tenant (`entity_type`: policy, risk,
    compliance_requirement, task, sop or policy_exception)."""

    path: str
    tenant_id: str
    entity_type: str = "policy"
    chunk_size: int = 500
    format: str | None = None


@dg.op
@lane_retries
def import_file(
    context: dg.OpExecutionContext, config: ImportConfig, database: DatabaseResource
) -> None:
    """Validate the whole file, then create its records in chunks, logging progress. A
    retry (of the op, or a run retry after a timeout) goes on after the records its earlier
    attempts created: the import is named by its first run's id."""
    with permanent_errors():
        if config.chunk_size < 1:
            raise InvalidInputError("chunk_size", "must be >= 1")
        noun = kind_of(config.entity_type).noun
        rows = importer.read_import_file(Path(config.path), config.format, config.entity_type)
    context.log.info(f"{len(rows)} row(s) read from {config.path}")

    def progress(done: int, total: int) -> None:
        context.log.info(f"imported {done}/{total} {noun} records ({100 * done // max(total, 1)}%)")

    with permanent_errors():
        report = importer.import_records(
            database.sessions(), tenant_id=config.tenant_id, rows=rows,
            entity_type=config.entity_type, chunk_size=config.chunk_size,
            actor=f"import:{context.run.root_run_id or context.run_id}", on_progress=progress,
            resume=True,
        )  # fmt: skip
    context.add_output_metadata(
        {
            "created": report.created, "chunks": report.chunks,
            "first_id": report.first_id or 0, "last_id": report.last_id or 0,
            "seconds": round(report.seconds, 3),
        }
    )  # fmt: skip


@dg.job(
    executor_def=beating_in_process_executor,
    tags={LANE_TAG: "import"},
    description="Bulk import of policies, risks or other records from a CSV or JSON file "
    "(config: path, tenant_id, entity_type).",
)
def import_records() -> None:
    import_file()
