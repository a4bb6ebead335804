"""Run fences: a Dagster run another worker ended, because its worker lost its lease (cut
off from Redis, or dead), is written here; from then on the run's transactions are
refused, so a process that comes back late cannot commit work its retry does.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 07:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from gov_pipeline.db.integrity import APP_ROLE

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "run_fences",
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("token", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column(
            "fenced_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_run_fences")),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"GRANT SELECT, INSERT ON run_fences TO {APP_ROLE}")


def downgrade() -> None:
    op.drop_table("run_fences")
