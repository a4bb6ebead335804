"""Every governed entity type: risks, compliance requirements, SOPs and policy exceptions get
tables, tasks become governed (captured, with a lifecycle); one capture function for every
governed table; decisions from any writer (`approval_decisions`, captured as changes); and
row-level security on the new tables.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 13:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from gov_pipeline.db.capture import (
    CapturedTable,
    install_capture,
    install_governed_capture,
    uninstall_governed_capture,
)
from gov_pipeline.db.integrity import install_integrity, table_triggers_drop_ddl
from gov_pipeline.domain.lifecycle import (
    EXCEPTION_LIFECYCLE,
    POLICY_LIFECYCLE,
    REQUIREMENT_LIFECYCLE,
    RISK_LIFECYCLE,
    SOP_LIFECYCLE,
    TASK_LIFECYCLE,
)

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# The governed tables at this revision, as captured (entity type, always-fields).
CAPTURED = (
    CapturedTable("policies", "policy", ("status", "policy_type")),
    CapturedTable("risks", "risk", ("status", "category", "risk_score")),
    CapturedTable("compliance_requirements", "compliance_requirement", ("status", "framework")),
    CapturedTable("tasks", "task", ("status", "priority")),
    CapturedTable("sops", "sop", ("status", "process_area")),
    CapturedTable("policy_exceptions", "policy_exception", ("status", "policy_id")),
)
LIFECYCLES = {
    "policies": POLICY_LIFECYCLE, "risks": RISK_LIFECYCLE,
    "compliance_requirements": REQUIREMENT_LIFECYCLE, "tasks": TASK_LIFECYCLE,
    "sops": SOP_LIFECYCLE, "policy_exceptions": EXCEPTION_LIFECYCLE,
}  # fmt: skip
NEW_TABLES = ("risks", "compliance_requirements", "sops", "policy_exceptions")
TENANT_TABLES_0004 = (
    "tenants", "users", "user_roles", "policies", "entity_changes", "workflows",
    "workflow_versions", "workflow_executions", "action_runs", "approvals", "notifications",
    "tasks", "webhook_deliveries", "processed_changes",
)  # fmt: skip
TENANT_TABLES = (*TENANT_TABLES_0004, *NEW_TABLES, "approval_decisions")
APP_TABLES = (*TENANT_TABLES, "consumer_cursors", "capture_context")
TASK_DEFAULTS = {
    "description": (sa.Text(), sa.text("''")),
    "priority": (sa.String(length=10), sa.text("'medium'")),
    "status": (sa.String(length=20), sa.text("'todo'")),
}


def upgrade() -> None:
    bind = op.get_bind()
    _create_tables()
    op.add_column("tasks", sa.Column("created_by", sa.String(length=100), nullable=True))
    op.add_column("tasks", sa.Column("updated_by", sa.String(length=100), nullable=True))
    op.add_column("tasks", sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
    # Defaults for raw writers (on SQLite a rebuild: tasks has no triggers yet).
    with op.batch_alter_table("tasks", recreate="auto") as b:
        for column, (type_, default) in TASK_DEFAULTS.items():
            b.alter_column(column, existing_type=type_, server_default=default)
    install_governed_capture(bind, CAPTURED)
    install_integrity(bind, LIFECYCLES, TENANT_TABLES, APP_TABLES, decisions=True)


def downgrade() -> None:
    bind = op.get_bind()
    postgres = bind.dialect.name == "postgresql"
    uninstall_governed_capture(bind, CAPTURED)
    for statement in table_triggers_drop_ddl({"tasks": TASK_LIFECYCLE}, postgres):
        bind.execute(sa.text(statement))
    for table in ("approval_decisions", *reversed(NEW_TABLES)):
        op.drop_table(table)
    if postgres:
        for lifecycle in (RISK_LIFECYCLE, REQUIREMENT_LIFECYCLE, SOP_LIFECYCLE,
                          EXCEPTION_LIFECYCLE):  # fmt: skip
            bind.execute(
                sa.text(f"DROP FUNCTION IF EXISTS gov_lifecycle_{lifecycle.entity_type}()")
            )
    with op.batch_alter_table("tasks", recreate="auto") as b:
        for column, (type_, _) in TASK_DEFAULTS.items():
            b.alter_column(column, existing_type=type_, server_default=None)
        for column in ("deleted_at", "updated_by", "created_by"):
            b.drop_column(column)
    # Revision 0004's capture of policies (SQLite: its triggers were dropped above).
    install_capture(bind)


def _create_tables() -> None:
    op.create_table(
        "approval_decisions",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(length=100), nullable=False),
        sa.Column("approval_id", BIG_ID, nullable=False),
        sa.Column("decided_by", sa.String(length=100), nullable=False),
        sa.Column("decision", sa.String(length=30), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("signature", JSON_TYPE, nullable=True),
        sa.Column("outcome", sa.String(length=20), server_default="pending", nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("change_id", BIG_ID, nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "decision IN ('approve', 'reject', 'request_changes')",
            name=op.f("ck_approval_decisions_known_decision"),
        ),
        sa.CheckConstraint(
            "outcome IN ('pending', 'accepted', 'refused')",
            name=op.f("ck_approval_decisions_known_outcome"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.tenant_id"],
            name=op.f("fk_approval_decisions_tenant_id_tenants"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_approval_decisions")),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_approval_decisions_approval", "approval_decisions", ["approval_id"], unique=False
    )
    op.create_table(
        "risks",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(length=100), nullable=False),
        sa.Column("title", sa.String(length=500), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("category", sa.String(length=200), nullable=False),
        sa.Column("owner_id", sa.String(length=100), nullable=True),
        sa.Column("status", sa.String(length=30), server_default="identified", nullable=False),
        sa.Column("likelihood", sa.Integer(), nullable=True),
        sa.Column("impact", sa.Integer(), nullable=True),
        sa.Column(
            "risk_score",
            sa.Integer(),
            sa.Computed("likelihood * impact", persisted=True),
            nullable=True,
        ),
        sa.Column("treatment", sa.String(length=20), nullable=True),
        sa.Column("review_frequency", sa.String(length=20), nullable=True),
        sa.Column("next_review_date", sa.Date(), nullable=True),
        sa.Column("business_units", JSON_TYPE, server_default=sa.text("'[]'"), nullable=False),
        sa.Column("tags", JSON_TYPE, server_default=sa.text("'[]'"), nullable=False),
        sa.Column("custom_fields", JSON_TYPE, server_default=sa.text("'{}'"), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=True),
        sa.Column("updated_by", sa.String(length=100), nullable=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint("impact BETWEEN 1 AND 5", name=op.f("ck_risks_impact_1_to_5")),
        sa.CheckConstraint("likelihood BETWEEN 1 AND 5", name=op.f("ck_risks_likelihood_1_to_5")),
        sa.CheckConstraint(
            "treatment IS NULL OR treatment IN ('mitigate', 'accept', 'transfer', 'avoid')",
            name=op.f("ck_risks_known_treatment"),
        ),
        sa.CheckConstraint(
            "review_frequency IS NULL OR review_frequency IN ('annual', 'biennial', 'triennial', "
            "'quarterly', 'monthly', 'as_needed')",
            name=op.f("ck_risks_known_review_frequency"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.tenant_id"], name=op.f("fk_risks_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_risks")),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_risks_tenant_id"), "risks", ["tenant_id"], unique=False)
    op.create_index(
        "ix_risks_tenant_review", "risks", ["tenant_id", "next_review_date"], unique=False
    )
    op.create_index("ix_risks_tenant_status", "risks", ["tenant_id", "status"], unique=False)
    op.create_table(
        "compliance_requirements",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(length=100), nullable=False),
        sa.Column("title", sa.String(length=500), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("framework", sa.String(length=200), nullable=False),
        sa.Column("reference", sa.String(length=200), nullable=True),
        sa.Column("owner_id", sa.String(length=100), nullable=True),
        sa.Column("status", sa.String(length=30), server_default="not_started", nullable=False),
        sa.Column("due_date", sa.Date(), nullable=True),
        sa.Column("last_assessed_date", sa.Date(), nullable=True),
        sa.Column("policy_id", BIG_ID, nullable=True),
        sa.Column("tags", JSON_TYPE, server_default=sa.text("'[]'"), nullable=False),
        sa.Column("custom_fields", JSON_TYPE, server_default=sa.text("'{}'"), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=True),
        sa.Column("updated_by", sa.String(length=100), nullable=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["policy_id"],
            ["policies.id"],
            name=op.f("fk_compliance_requirements_policy_id_policies"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.tenant_id"],
            name=op.f("fk_compliance_requirements_tenant_id_tenants"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_compliance_requirements")),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_compliance_requirements_tenant_due",
        "compliance_requirements",
        ["tenant_id", "due_date"],
        unique=False,
    )
    op.create_index(
        op.f("ix_compliance_requirements_tenant_id"),
        "compliance_requirements",
        ["tenant_id"],
        unique=False,
    )
    op.create_index(
        "ix_compliance_requirements_tenant_status",
        "compliance_requirements",
        ["tenant_id", "status"],
        unique=False,
    )
    op.create_table(
        "policy_exceptions",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(length=100), nullable=False),
        sa.Column("policy_id", BIG_ID, nullable=False),
        sa.Column("title", sa.String(length=500), nullable=False),
        sa.Column("justification", sa.Text(), nullable=True),
        sa.Column("compensating_controls", sa.Text(), nullable=True),
        sa.Column("risk_level", sa.String(length=20), nullable=True),
        sa.Column("requested_by", sa.String(length=100), nullable=True),
        sa.Column("owner_id", sa.String(length=100), nullable=True),
        sa.Column("status", sa.String(length=20), server_default="requested", nullable=False),
        sa.Column("start_date", sa.Date(), nullable=True),
        sa.Column("expiry_date", sa.Date(), nullable=True),
        sa.Column("tags", JSON_TYPE, server_default=sa.text("'[]'"), nullable=False),
        sa.Column("custom_fields", JSON_TYPE, server_default=sa.text("'{}'"), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=True),
        sa.Column("updated_by", sa.String(length=100), nullable=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint(
            "risk_level IS NULL OR risk_level IN ('low', 'medium', 'high', 'critical')",
            name=op.f("ck_policy_exceptions_known_risk_level"),
        ),
        sa.ForeignKeyConstraint(
            ["policy_id"], ["policies.id"], name=op.f("fk_policy_exceptions_policy_id_policies")
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.tenant_id"],
            name=op.f("fk_policy_exceptions_tenant_id_tenants"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_policy_exceptions")),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_policy_exceptions_tenant_expiry",
        "policy_exceptions",
        ["tenant_id", "expiry_date"],
        unique=False,
    )
    op.create_index(
        op.f("ix_policy_exceptions_tenant_id"), "policy_exceptions", ["tenant_id"], unique=False
    )
    op.create_index(
        "ix_policy_exceptions_tenant_status",
        "policy_exceptions",
        ["tenant_id", "status"],
        unique=False,
    )
    op.create_table(
        "sops",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(length=100), nullable=False),
        sa.Column("title", sa.String(length=500), nullable=False),
        sa.Column("process_area", sa.String(length=200), nullable=False),
        sa.Column("content", sa.Text(), server_default="", nullable=False),
        sa.Column("owner_id", sa.String(length=100), nullable=True),
        sa.Column("status", sa.String(length=20), server_default="draft", nullable=False),
        sa.Column("version", sa.String(length=50), server_default="1.0", nullable=False),
        sa.Column("effective_date", sa.Date(), nullable=True),
        sa.Column("review_frequency", sa.String(length=20), nullable=True),
        sa.Column("next_review_date", sa.Date(), nullable=True),
        sa.Column("published_date", sa.Date(), nullable=True),
        sa.Column("policy_id", BIG_ID, nullable=True),
        sa.Column("tags", JSON_TYPE, server_default=sa.text("'[]'"), nullable=False),
        sa.Column("custom_fields", JSON_TYPE, server_default=sa.text("'{}'"), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=True),
        sa.Column("updated_by", sa.String(length=100), nullable=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint(
            "review_frequency IS NULL OR review_frequency IN ('annual', 'biennial', 'triennial', "
            "'quarterly', 'monthly', 'as_needed')",
            name=op.f("ck_sops_known_review_frequency"),
        ),
        sa.ForeignKeyConstraint(
            ["policy_id"], ["policies.id"], name=op.f("fk_sops_policy_id_policies")
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.tenant_id"], name=op.f("fk_sops_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sops")),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_sops_tenant_id"), "sops", ["tenant_id"], unique=False)
    op.create_index(
        "ix_sops_tenant_review", "sops", ["tenant_id", "next_review_date"], unique=False
    )
    op.create_index("ix_sops_tenant_status", "sops", ["tenant_id", "status"], unique=False)
