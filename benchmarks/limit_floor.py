"""The limit row: the rows a burst produced, written straight into PostgreSQL, no engine.

Usage (from another benchmark): `limit_row(admin_url, source_url, after)` after a burst has
been processed in the database at `source_url` (its changes have ids above `after`).

What the engine wrote for those changes (executions, action runs, notifications, tasks,
approvals, webhook and email rows, processed markers) is copied out of the source database,
then written into a fresh database holding the same inputs (tenants, users, workflows,
records, changes: copied untimed, triggers off), per table one `COPY ... FROM STDIN` into a
staging table and one multi-row `INSERT ... SELECT` (PostgreSQL refuses COPY into a table
under row-level security), in one transaction per 1,000 changes, as the application's role
(its triggers, constraints and row-level security apply, as they do to the engine). The
time of those writes is the physical floor a configuration's changes per second is
compared with.
"""

from __future__ import annotations

import io
import time
import uuid
from typing import Any

from sqlalchemy import create_engine, text

from benchmarks.coordinator_throughput import database
from gov_pipeline.db.engine import make_engine
from gov_pipeline.db.integrity import ALL_TENANTS, APP_ROLE, TENANT_SETTING
from gov_pipeline.db.migrate import upgrade

# The inputs, copied untimed; then what the engine writes, in the order of their keys.
INPUTS = (
    "tenants", "users", "user_roles", "workflows", "workflow_versions", "policies",
    "entity_changes",
)  # fmt: skip
# Each transaction's rows: those of the changes with ids in [lo, hi].
OF_CHANGES = "change_id BETWEEN {lo} AND {hi}"
OF_EXECUTIONS = f"execution_id IN (SELECT id FROM workflow_executions WHERE {OF_CHANGES})"
OUTPUTS = {
    "workflow_executions": OF_CHANGES,
    "change_skips": OF_CHANGES,
    "action_runs": OF_EXECUTIONS,
    "approvals": OF_EXECUTIONS,
    "notifications": OF_EXECUTIONS,
    "tasks": OF_EXECUTIONS,
    "webhook_deliveries": OF_EXECUTIONS,
    "email_deliveries": OF_EXECUTIONS,
    "processed_changes": OF_CHANGES,
}
CHANGES_PER_TRANSACTION = 1000


def _copy_out(cursor: Any, table: str, where: str) -> bytes:
    buffer = io.BytesIO()
    cursor.copy_expert(f"COPY (SELECT * FROM {table} WHERE {where}) TO STDOUT", buffer)
    return buffer.getvalue()


def limit_row(admin_url: str, source_url: str, after: int) -> dict[str, Any]:
    """Write the burst's rows straight into a fresh database; the figures of that."""
    source = create_engine(source_url)
    with source.connect() as conn:
        cursor = conn.connection.cursor()
        ids = list(
            conn.execute(
                text("SELECT change_id FROM processed_changes WHERE change_id > :a ORDER BY 1"),
                {"a": after},
            ).scalars()
        )
        inputs = {t: _copy_out(cursor, t, "true") for t in INPUTS}
        transactions = [
            {
                table: _copy_out(cursor, table, where.format(lo=part[0], hi=part[-1]))
                for table, where in OUTPUTS.items()
            }
            for part in (
                ids[i : i + CHANGES_PER_TRANSACTION]
                for i in range(0, len(ids), CHANGES_PER_TRANSACTION)
            )
        ]
    source.dispose()
    with database(admin_url, f"gov_bench_limit_{uuid.uuid4().hex[:8]}") as url:
        upgrade(url)
        _load_inputs(url, inputs)
        seconds = _write_outputs(url, transactions)
    rows = {t: sum(tx[t].count(b"\n") for tx in transactions) for t in OUTPUTS}
    return {
        "changes": len(ids),
        "rows": rows,
        "seconds": seconds,
        "changes_per_s": len(ids) / seconds if seconds > 0 else 0.0,
        "rows_per_s": sum(rows.values()) / seconds if seconds > 0 else 0.0,
    }


def _load_inputs(url: str, inputs: dict[str, bytes]) -> None:
    """The inputs, as a superuser with triggers and foreign keys off; then every id
    sequence past the copied ids."""
    admin = create_engine(url)
    with admin.begin() as conn:
        conn.execute(text("SET session_replication_role = replica"))
        cursor = conn.connection.cursor()
        for table, data in inputs.items():
            cursor.copy_expert(f"COPY {table} FROM STDIN", io.BytesIO(data))
        sequences = conn.execute(
            text(
                "SELECT table_name, pg_get_serial_sequence(table_name, 'id') FROM "
                "information_schema.columns WHERE table_schema = 'public' AND column_name = 'id'"
            )
        ).all()
        for table, sequence in sequences:
            if sequence:
                next_id = f"(SELECT coalesce(max(id), 0) + 1 FROM {table})"
                conn.execute(text(f"SELECT setval('{sequence}', {next_id}, false)"))
    admin.dispose()


def _write_outputs(url: str, transactions: list[dict[str, bytes]]) -> float:
    """The timed part: each transaction's rows, as the application's role."""
    engine = make_engine(url, role=APP_ROLE)
    started = time.perf_counter()
    with engine.connect() as conn:
        for tables in transactions:
            with conn.begin():
                conn.execute(
                    text(f"SELECT set_config('{TENANT_SETTING}', :t, true)"), {"t": ALL_TENANTS}
                )
                cursor = conn.connection.cursor()
                for table, data in tables.items():
                    if not data:
                        continue
                    # COPY refuses tables under row-level security: COPY into a staging
                    # table, then one multi-row INSERT (triggers, checks, policies apply).
                    cursor.execute(
                        f"CREATE TEMP TABLE staged_{table} (LIKE {table}) ON COMMIT DROP"
                    )
                    cursor.copy_expert(f"COPY staged_{table} FROM STDIN", io.BytesIO(data))
                    cursor.execute(f"INSERT INTO {table} SELECT * FROM staged_{table}")
    seconds = time.perf_counter() - started
    engine.dispose()
    return seconds
