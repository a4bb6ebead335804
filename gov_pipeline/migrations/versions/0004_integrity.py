"""Integrity for every writer: the lifecycle and `updated_at` kept by the database, database
defaults for what a raw writer need not know, refused changes, unsigned webhooks by opt-in
only, and row-level security per tenant on PostgreSQL.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 11:30:00
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from gov_pipeline.db.capture import install_capture
from gov_pipeline.db.integrity import install_integrity, uninstall_integrity
from gov_pipeline.domain.lifecycle import POLICY_LIFECYCLE

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

LIFECYCLES = {"policies": POLICY_LIFECYCLE}
# Every table whose rows belong to a tenant (row-level security on PostgreSQL).
TENANT_TABLES = (
    "tenants", "users", "user_roles", "policies", "entity_changes", "workflows",
    "workflow_versions", "workflow_executions", "action_runs", "approvals", "notifications",
    "tasks", "webhook_deliveries", "processed_changes",
)  # fmt: skip
APP_TABLES = (*TENANT_TABLES, "consumer_cursors", "capture_context")

POLICY_DEFAULTS: dict[str, tuple[Any, Any]] = {
    "content": (sa.Text(), sa.text("''")),
    "business_units": (JSON_TYPE, sa.text("'[]'")),
    "status": (sa.String(length=20), sa.text("'draft'")),
    "version": (sa.String(length=50), sa.text("'1.0'")),
    "version_number": (sa.Integer(), sa.text("1")),
    "tags": (JSON_TYPE, sa.text("'[]'")),
    "custom_fields": (JSON_TYPE, sa.text("'{}'")),
    "requires_acknowledgment": (sa.Boolean(), sa.false()),
}


def upgrade() -> None:
    bind = op.get_bind()
    # Added columns only: SQLite adds them in place (a rebuilt table would lose triggers).
    op.add_column("entity_changes", sa.Column("lifecycle_override", sa.Text(), nullable=True))
    op.add_column(
        "webhook_deliveries",
        sa.Column("unsigned", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.add_column(
        "processed_changes",
        sa.Column("outcome", sa.String(length=20), server_default="processed", nullable=False),
    )
    op.add_column("processed_changes", sa.Column("note", sa.Text(), nullable=True))
    op.add_column(
        "capture_context",
        sa.Column("importing", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.add_column("capture_context", sa.Column("lifecycle_override", sa.Text(), nullable=True))
    # On SQLite this rebuilds the table, which drops its triggers: installed again below.
    with op.batch_alter_table("policies", recreate="auto") as b:
        for column, (type_, default) in POLICY_DEFAULTS.items():
            b.alter_column(column, existing_type=type_, server_default=default)
    with op.batch_alter_table("users") as b:
        b.alter_column("active", existing_type=sa.Boolean(), server_default=sa.true())
    install_capture(bind)
    install_integrity(bind, LIFECYCLES, TENANT_TABLES, APP_TABLES)


def downgrade() -> None:
    bind = op.get_bind()
    uninstall_integrity(bind, LIFECYCLES, TENANT_TABLES)
    with op.batch_alter_table("users") as b:
        b.alter_column("active", existing_type=sa.Boolean(), server_default=None)
    with op.batch_alter_table("policies", recreate="auto") as b:
        for column, (type_, _) in POLICY_DEFAULTS.items():
            b.alter_column(column, existing_type=type_, server_default=None)
    with op.batch_alter_table("capture_context") as b:
        b.drop_column("lifecycle_override")
        b.drop_column("importing")
    with op.batch_alter_table("processed_changes") as b:
        b.drop_column("note")
        b.drop_column("outcome")
    with op.batch_alter_table("webhook_deliveries") as b:
        b.drop_column("unsigned")
    with op.batch_alter_table("entity_changes", table_kwargs={"sqlite_autoincrement": True}) as b:
        b.drop_column("lifecycle_override")
    install_capture(bind, override=False)
