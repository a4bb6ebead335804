"""Tasks a workflow creates are written with the chunk's other rows, in one multi-row
INSERT: the capture reads the writing execution off the task row (`execution_id`,
`action_run_id`, `created_by`) instead of the transaction's settings, which one statement
cannot vary per row.

PostgreSQL only: on SQLite the engine writes every task alone, under the capture context
of its execution, as before.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 02:30:00
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

from gov_pipeline.db.capture import governed_function_ddl

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        bind.execute(text(governed_function_ddl(row_execution=True)))


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        bind.execute(text(governed_function_ddl(row_execution=False)))
