"""Compact skips: the workflows a change did not match, and why, in one row per change
(`change_skips`), instead of one skipped execution row per workflow.

A change's skip row is written with its executions, in the transaction that matches it, so
it also tells a replay which workflows were already decided for the change: matching again
leaves them out. Skipped execution rows written before this revision stay as they are; the
readers count both.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 22:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from gov_pipeline.db.integrity import install_integrity
from gov_pipeline.domain.lifecycle import (
    EXCEPTION_LIFECYCLE,
    POLICY_LIFECYCLE,
    REQUIREMENT_LIFECYCLE,
    RISK_LIFECYCLE,
    SOP_LIFECYCLE,
    TASK_LIFECYCLE,
)

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
LIFECYCLES = {
    "policies": POLICY_LIFECYCLE, "risks": RISK_LIFECYCLE,
    "compliance_requirements": REQUIREMENT_LIFECYCLE, "tasks": TASK_LIFECYCLE,
    "sops": SOP_LIFECYCLE, "policy_exceptions": EXCEPTION_LIFECYCLE,
}  # fmt: skip
TENANT_TABLES_0006 = (
    "tenants", "users", "user_roles", "policies", "entity_changes", "workflows",
    "workflow_versions", "workflow_executions", "action_runs", "approvals", "notifications",
    "tasks", "webhook_deliveries", "processed_changes", "risks", "compliance_requirements",
    "sops", "policy_exceptions", "approval_decisions", "approval_escalations", "reviews",
    "email_deliveries",
)  # fmt: skip
TENANT_TABLES = (*TENANT_TABLES_0006, "change_skips")
APP_TABLES = (*TENANT_TABLES, "consumer_cursors", "capture_context")


def upgrade() -> None:
    op.create_table(
        "change_skips",
        sa.Column("change_id", BIG_ID, nullable=False),
        sa.Column("tenant_id", sa.String(length=100), nullable=False),
        # [{"workflow_id": .., "workflow_version": .., "reason": ..}, ...] in workflow order
        sa.Column("workflows", JSON_TYPE, nullable=False),
        sa.Column("skipped", sa.Integer(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("change_id", name=op.f("pk_change_skips")),
    )
    op.create_index("ix_change_skips_created", "change_skips", ["tenant_id", "created_at"])
    install_integrity(op.get_bind(), LIFECYCLES, TENANT_TABLES, APP_TABLES,
                      decisions=True)  # fmt: skip


def downgrade() -> None:
    op.drop_index("ix_change_skips_created", table_name="change_skips")
    op.drop_table("change_skips")
