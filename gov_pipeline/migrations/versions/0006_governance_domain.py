"""The rest of the governance domain: approval steps with a quorum, delegation and an
escalation of their own (`approval_escalations` records each escalation once); completed
reviews (`reviews`, whose insert schedules the record's next review, for every writer); the
email outbox (`email_deliveries`).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 15:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from gov_pipeline.db.integrity import install_integrity
from gov_pipeline.db.reviews import install_review_cycles, uninstall_review_cycles
from gov_pipeline.domain.lifecycle import (
    EXCEPTION_LIFECYCLE,
    POLICY_LIFECYCLE,
    REQUIREMENT_LIFECYCLE,
    RISK_LIFECYCLE,
    SOP_LIFECYCLE,
    TASK_LIFECYCLE,
)

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

LIFECYCLES = {
    "policies": POLICY_LIFECYCLE, "risks": RISK_LIFECYCLE,
    "compliance_requirements": REQUIREMENT_LIFECYCLE, "tasks": TASK_LIFECYCLE,
    "sops": SOP_LIFECYCLE, "policy_exceptions": EXCEPTION_LIFECYCLE,
}  # fmt: skip
TENANT_TABLES_0005 = (
    "tenants", "users", "user_roles", "policies", "entity_changes", "workflows",
    "workflow_versions", "workflow_executions", "action_runs", "approvals", "notifications",
    "tasks", "webhook_deliveries", "processed_changes", "risks", "compliance_requirements",
    "sops", "policy_exceptions", "approval_decisions",
)  # fmt: skip
NEW_TABLES = ("approval_escalations", "reviews", "email_deliveries")
TENANT_TABLES = (*TENANT_TABLES_0005, *NEW_TABLES)
APP_TABLES = (*TENANT_TABLES, "consumer_cursors", "capture_context")


def _timestamps() -> list[sa.Column[object]]:
    return [
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
    ]


def upgrade() -> None:
    bind = op.get_bind()
    # Plain ADD COLUMN on both databases (a SQLite rebuild of `approvals` would break the
    # decision capture trigger, which names the table).
    for column in (
        sa.Column("quorum", sa.Integer(), server_default="1", nullable=False),
        sa.Column("allow_delegation", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("delegations", JSON_TYPE, server_default=sa.text("'[]'"), nullable=False),
        sa.Column("escalation", JSON_TYPE, nullable=True),
        sa.Column("reassigned_at", sa.DateTime(timezone=True), nullable=True),
    ):
        op.add_column("approvals", column)
    op.create_table(
        "approval_escalations",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(length=100), nullable=False),
        sa.Column("approval_id", BIG_ID, nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("notified", sa.Integer(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["approval_id"],
            ["approvals.id"],
            name=op.f("fk_approval_escalations_approval_id_approvals"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_approval_escalations")),
        sa.UniqueConstraint("approval_id", "kind", "round", name="uq_approval_escalations_round"),
    )
    op.create_table(
        "reviews",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(length=100), nullable=False),
        sa.Column("entity_type", sa.String(length=50), nullable=False),
        sa.Column("entity_id", BIG_ID, nullable=False),
        sa.Column("reviewed_by", sa.String(length=100), nullable=False),
        sa.Column("notes", sa.Text(), server_default="", nullable=False),
        sa.Column(
            "reviewed_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("next_review_date", sa.Date(), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.tenant_id"], name=op.f("fk_reviews_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reviews")),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_reviews_entity", "reviews", ["tenant_id", "entity_type", "entity_id"], unique=False
    )
    op.create_table(
        "email_deliveries",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(length=100), nullable=False),
        sa.Column("notification_id", BIG_ID, nullable=False),
        sa.Column("execution_id", BIG_ID, nullable=True),
        sa.Column("user_id", sa.String(length=100), nullable=False),
        sa.Column("to_address", sa.String(length=320), nullable=False),
        sa.Column("subject", sa.String(length=500), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_deliveries")),
        sa.UniqueConstraint("notification_id", name="uq_email_deliveries_notification_id"),
    )
    op.create_index(
        "ix_email_deliveries_status",
        "email_deliveries",
        ["status", "next_attempt_at"],
        unique=False,
    )
    install_integrity(bind, LIFECYCLES, TENANT_TABLES, APP_TABLES, decisions=True)
    install_review_cycles(bind)


def downgrade() -> None:
    bind = op.get_bind()
    uninstall_review_cycles(bind)
    op.drop_index("ix_email_deliveries_status", table_name="email_deliveries")
    op.drop_table("email_deliveries")
    op.drop_index("ix_reviews_entity", table_name="reviews")
    op.drop_table("reviews")
    op.drop_table("approval_escalations")
    for column in ("reassigned_at", "escalation", "delegations", "allow_delegation", "quorum"):
        bind.execute(sa.text(f"ALTER TABLE approvals DROP COLUMN {column}"))
