"""SQLAlchemy 2.0 typed models for every table of the domain.

Every domain row carries `tenant_id`. The unique keys that make retries safe:
one execution per (workflow, dedupe key — `change:<id>` for a change), one action run per
(execution, step key), one approval row per (execution, step index).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Computed,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
    func,
    text,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from gov_pipeline.domain.statuses import EntityType, ReviewFrequency, RiskLevel, RiskTreatment


def _one_of(column: str, values: type[StrEnum]) -> CheckConstraint:
    """`column` is empty or one of `values`, for every writer."""
    listed = ", ".join(f"'{v}'" for v in values)
    return CheckConstraint(f"{column} IS NULL OR {column} IN ({listed})", name=f"known_{column}")


# BIGINT on PostgreSQL, INTEGER (the rowid alias, needed for AUTOINCREMENT) on SQLite.
BigId = BigInteger().with_variant(Integer(), "sqlite")
# JSONB on PostgreSQL (the capture trigger builds jsonb), JSON text on SQLite.
Json = JSON().with_variant(JSONB(), "postgresql")

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


# Database defaults of JSON columns, for writers that do not name them (raw SQL).
EMPTY_LIST = text("'[]'")
EMPTY_MAP = text("'{}'")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on the way in and out (SQLite stores no offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        if value is not None and dialect.name == "sqlite":
            return value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def row_to_dict(row: Any, exclude: frozenset[str] = frozenset()) -> dict[str, Any]:
    """A JSON-ready dict of a mapped row's columns (dates and times as ISO strings)."""
    data: dict[str, Any] = {}
    for column in row.__table__.columns:
        if column.key in exclude:
            continue
        value = getattr(row, column.key)
        data[column.key] = value.isoformat() if isinstance(value, datetime | date) else value
    return data


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        dict[str, Any]: Json,
        list[Any]: Json,
        list[str]: Json,
        datetime: UtcDateTime(),
        date: Date,
    }


class Timestamps:
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        default=utcnow, onupdate=utcnow, server_default=func.now()
    )


class Tenant(Base):
    __tablename__ = "tenants"

    tenant_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())


class User(Base):
    __tablename__ = "users"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.tenant_id"), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320))
    active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())


class UserRole(Base):
    __tablename__ = "user_roles"

    tenant_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    role: Mapped[str] = mapped_column(String(50), primary_key=True)

    __table_args__ = (Index("ix_user_roles_tenant_role", "tenant_id", "role"),)


class Policy(Base, Timestamps):
    __tablename__ = "policies"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.tenant_id"), index=True)
    title: Mapped[str] = mapped_column(String(500))
    policy_type: Mapped[str] = mapped_column(String(200))
    content: Mapped[str] = mapped_column(Text, default="", server_default="")
    purpose: Mapped[str | None] = mapped_column(Text)
    scope: Mapped[str | None] = mapped_column(Text)
    owner_id: Mapped[str | None] = mapped_column(String(100))
    business_units: Mapped[list[str]] = mapped_column(default=list, server_default=EMPTY_LIST)
    status: Mapped[str] = mapped_column(String(20), default="draft", server_default="draft")
    version: Mapped[str] = mapped_column(String(50), default="1.0", server_default="1.0")
    version_number: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    effective_date: Mapped[date | None]
    review_frequency: Mapped[str | None] = mapped_column(String(20))
    next_review_date: Mapped[date | None]
    published_date: Mapped[date | None]
    parent_policy_id: Mapped[int | None] = mapped_column(BigId)
    tags: Mapped[list[str]] = mapped_column(default=list, server_default=EMPTY_LIST)
    custom_fields: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default=EMPTY_MAP)
    requires_acknowledgment: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false()
    )
    created_by: Mapped[str | None] = mapped_column(String(100))
    updated_by: Mapped[str | None] = mapped_column(String(100))
    deleted_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_policies_tenant_status", "tenant_id", "status"),
        Index("ix_policies_tenant_review", "tenant_id", "next_review_date"),
    )


class EntityChange(Base):
    """The change table: append-only, one row per captured change, written by triggers."""

    __tablename__ = "entity_changes"
    __table_args__ = (
        Index("ix_entity_changes_entity", "tenant_id", "entity_type", "entity_id", "id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(100))
    entity_type: Mapped[str] = mapped_column(String(50))
    entity_id: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(30))
    old_values: Mapped[dict[str, Any] | None]
    new_values: Mapped[dict[str, Any] | None]
    changed_fields: Mapped[list[str]] = mapped_column(default=list)
    actor: Mapped[str | None] = mapped_column(String(100))
    caused_by_execution_id: Mapped[int | None] = mapped_column(BigId)
    chain_depth: Mapped[int] = mapped_column(Integer, default=0)
    # PostgreSQL: the writing transaction id (pg_current_xact_id), for diagnosing the reader.
    txid: Mapped[int | None] = mapped_column(BigInteger)
    # Set when the writer overrode the lifecycle for this transaction (data repair): its reason.
    lifecycle_override: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())


class CaptureContext(Base):
    """SQLite only: who is writing, for the triggers (PostgreSQL uses set_config).

    Not tenant data: a row lives only inside one write transaction (deleted before commit).
    """

    __tablename__ = "capture_context"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    actor: Mapped[str | None] = mapped_column(String(100))
    execution_id: Mapped[int | None] = mapped_column(BigId)
    chain_depth: Mapped[int] = mapped_column(Integer, default=0)
    # An import may give new rows another status than the initial one.
    importing: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Data repair: the lifecycle is not enforced in this transaction; recorded on its changes.
    lifecycle_override: Mapped[str | None] = mapped_column(Text)


class Workflow(Base, Timestamps):
    __tablename__ = "workflows"
    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_workflows_tenant_name"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.tenant_id"))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    type: Mapped[str] = mapped_column(String(30))
    status: Mapped[str] = mapped_column(String(20), default="active")
    trigger: Mapped[str] = mapped_column(String(40))
    entity_type: Mapped[str] = mapped_column(String(50), default="policy")
    priority: Mapped[int] = mapped_column(Integer, default=0)
    days_before_deadline: Mapped[int | None] = mapped_column(Integer)
    owner_id: Mapped[str | None] = mapped_column(String(100))
    current_version: Mapped[int] = mapped_column(Integer, default=1)


class WorkflowVersion(Base):
    __tablename__ = "workflow_versions"
    __table_args__ = (UniqueConstraint("workflow_id", "version", name="uq_workflow_versions"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(100))
    workflow_id: Mapped[int] = mapped_column(ForeignKey("workflows.id"))
    version: Mapped[int] = mapped_column(Integer)
    definition: Mapped[dict[str, Any]]
    fingerprint: Mapped[str] = mapped_column(String(64))
    created_by: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())


class WorkflowExecution(Base, Timestamps):
    __tablename__ = "workflow_executions"
    __table_args__ = (
        UniqueConstraint("workflow_id", "dedupe_key", name="uq_workflow_executions_dedupe"),
        Index("ix_workflow_executions_status", "tenant_id", "status"),
        Index("ix_workflow_executions_entity", "tenant_id", "entity_type", "entity_id"),
        Index("ix_workflow_executions_change", "change_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(100))
    workflow_id: Mapped[int] = mapped_column(ForeignKey("workflows.id"))
    workflow_version: Mapped[int] = mapped_column(Integer)
    # `change:<id>` for a captured change; `manual:<token>` or `deadline:<...>` otherwise.
    dedupe_key: Mapped[str] = mapped_column(String(200))
    change_id: Mapped[int | None] = mapped_column(BigId)
    entity_type: Mapped[str] = mapped_column(String(50))
    entity_id: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(30), default="pending")
    status_reason: Mapped[str | None] = mapped_column(Text)
    input: Mapped[dict[str, Any] | None]
    output: Mapped[dict[str, Any] | None]
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    dagster_run_id: Mapped[str | None] = mapped_column(String(64))
    caused_by_execution_id: Mapped[int | None] = mapped_column(BigId)
    chain_depth: Mapped[int] = mapped_column(Integer, default=0)
    assignee_id: Mapped[str | None] = mapped_column(String(100))
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class ActionRun(Base):
    __tablename__ = "action_runs"
    __table_args__ = (UniqueConstraint("execution_id", "step_key", name="uq_action_runs_step"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(100))
    execution_id: Mapped[int] = mapped_column(ForeignKey("workflow_executions.id"))
    step_key: Mapped[str] = mapped_column(String(100))
    action_type: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(20), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    result: Mapped[dict[str, Any] | None]
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())
    finished_at: Mapped[datetime | None]


class Approval(Base):
    __tablename__ = "approvals"
    __table_args__ = (
        UniqueConstraint("execution_id", "step_index", name="uq_approvals_step"),
        Index("ix_approvals_tenant_status", "tenant_id", "status"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(100))
    execution_id: Mapped[int] = mapped_column(ForeignKey("workflow_executions.id"))
    entity_type: Mapped[str] = mapped_column(String(50))
    entity_id: Mapped[str] = mapped_column(String(100))
    step_index: Mapped[int] = mapped_column(Integer)
    name: Mapped[str | None] = mapped_column(String(200))
    mode: Mapped[str] = mapped_column(String(20))
    approver_users: Mapped[list[str]] = mapped_column(default=list)
    approver_roles: Mapped[list[str]] = mapped_column(default=list)
    status: Mapped[str] = mapped_column(String(30))
    decided_by: Mapped[str | None] = mapped_column(String(100))
    comment: Mapped[str | None] = mapped_column(Text)
    signature: Mapped[dict[str, Any] | None]
    due_at: Mapped[datetime | None]
    requested_at: Mapped[datetime | None]
    decided_at: Mapped[datetime | None]
    escalated_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())
    # How many distinct listed approvers must approve (a parallel step's N of M; 1 otherwise).
    quorum: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    # The definition lets an approver hand the step to another user of the tenant.
    allow_delegation: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # [{"from": user, "to": user, "at": iso time, "comment": text}], in order.
    delegations: Mapped[list[Any]] = mapped_column(default=list, server_default=text("'[]'"))
    # The step's escalation, from the definition: {"users": [...], "roles": [...],
    # "reassign_after_hours": N | null, "repeat_every_hours": M | null}; null: the default
    # (owner, admins and approvers told once).
    escalation: Mapped[dict[str, Any] | None]
    reassigned_at: Mapped[datetime | None]


class ApprovalEscalation(Base):
    """One escalation of an overdue step: round k (0 at the due time, then every
    `repeat_every_hours`) or its reassignment; unique, so each happens once."""

    __tablename__ = "approval_escalations"
    __table_args__ = (
        UniqueConstraint("approval_id", "kind", "round", name="uq_approval_escalations_round"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(100))
    approval_id: Mapped[int] = mapped_column(ForeignKey("approvals.id"))
    kind: Mapped[str] = mapped_column(String(20))  # escalated | reassigned
    round: Mapped[int] = mapped_column(Integer, default=0)
    notified: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())


class Review(Base):
    """A completed review of a record (policy, SOP, risk), from any writer: the CLI, the
    `complete_review` job or another application's INSERT. The database sets the record's
    `next_review_date` from its `review_frequency` (db/reviews.py) and this row's
    `next_review_date` to the same date."""

    __tablename__ = "reviews"
    __table_args__ = (
        Index("ix_reviews_entity", "tenant_id", "entity_type", "entity_id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.tenant_id"))
    entity_type: Mapped[str] = mapped_column(String(50))
    entity_id: Mapped[int] = mapped_column(BigId)
    reviewed_by: Mapped[str] = mapped_column(String(100))
    notes: Mapped[str] = mapped_column(Text, default="", server_default="")
    reviewed_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())
    next_review_date: Mapped[date | None]


class EmailDelivery(Base, Timestamps):
    """The email outbox: one message per notification of a user with an address, written
    with the notification when SMTP is configured, sent afterwards with the notification
    lane's retries."""

    __tablename__ = "email_deliveries"
    __table_args__ = (
        UniqueConstraint("notification_id", name="uq_email_deliveries_notification_id"),
        Index("ix_email_deliveries_status", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(100))
    notification_id: Mapped[int] = mapped_column(BigId)
    execution_id: Mapped[int | None] = mapped_column(BigId)
    user_id: Mapped[str] = mapped_column(String(100))
    to_address: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(String(500))
    body: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(20), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=10)
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime | None]
    sent_at: Mapped[datetime | None]


class Notification(Base):
    __tablename__ = "notifications"
    __table_args__ = (
        UniqueConstraint("action_run_id", "user_id", name="uq_notifications_action_user"),
        Index("ix_notifications_user", "tenant_id", "user_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(100))
    user_id: Mapped[str] = mapped_column(String(100))
    type: Mapped[str] = mapped_column(String(40))
    priority: Mapped[str] = mapped_column(String(10), default="medium")
    title: Mapped[str] = mapped_column(String(500))
    message: Mapped[str] = mapped_column(Text, default="")
    entity_type: Mapped[str | None] = mapped_column(String(50))
    entity_id: Mapped[str | None] = mapped_column(String(100))
    execution_id: Mapped[int | None] = mapped_column(BigId)
    action_run_id: Mapped[int | None] = mapped_column(BigId)
    read_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())


class Task(Base, Timestamps):
    __tablename__ = "tasks"
    __table_args__ = (
        UniqueConstraint("action_run_id", name="uq_tasks_action_run_id"),
        Index("ix_tasks_tenant_assignee", "tenant_id", "assignee_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(100))
    title: Mapped[str] = mapped_column(String(500))
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    priority: Mapped[str] = mapped_column(String(10), default="medium", server_default="medium")
    status: Mapped[str] = mapped_column(String(20), default="todo", server_default="todo")
    assignee_id: Mapped[str | None] = mapped_column(String(100))
    due_date: Mapped[date | None]
    entity_type: Mapped[str | None] = mapped_column(String(50))
    entity_id: Mapped[str | None] = mapped_column(String(100))
    execution_id: Mapped[int | None] = mapped_column(BigId)
    action_run_id: Mapped[int | None] = mapped_column(BigId)
    created_by: Mapped[str | None] = mapped_column(String(100))
    updated_by: Mapped[str | None] = mapped_column(String(100))
    deleted_at: Mapped[datetime | None]


class Risk(Base, Timestamps):
    __tablename__ = "risks"
    __table_args__ = (
        Index("ix_risks_tenant_status", "tenant_id", "status"),
        Index("ix_risks_tenant_review", "tenant_id", "next_review_date"),
        CheckConstraint("likelihood BETWEEN 1 AND 5", name="likelihood_1_to_5"),
        CheckConstraint("impact BETWEEN 1 AND 5", name="impact_1_to_5"),
        _one_of("treatment", RiskTreatment),
        _one_of("review_frequency", ReviewFrequency),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.tenant_id"), index=True)
    title: Mapped[str] = mapped_column(String(500))
    description: Mapped[str | None] = mapped_column(Text)
    category: Mapped[str] = mapped_column(String(200))
    owner_id: Mapped[str | None] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(
        String(30), default="identified", server_default="identified"
    )
    likelihood: Mapped[int | None] = mapped_column(Integer)
    impact: Mapped[int | None] = mapped_column(Integer)
    # Computed by the database for every writer; conditions read it like any field.
    risk_score: Mapped[int | None] = mapped_column(
        Integer, Computed("likelihood * impact", persisted=True)
    )
    treatment: Mapped[str | None] = mapped_column(String(20))
    review_frequency: Mapped[str | None] = mapped_column(String(20))
    next_review_date: Mapped[date | None]
    business_units: Mapped[list[str]] = mapped_column(default=list, server_default=EMPTY_LIST)
    tags: Mapped[list[str]] = mapped_column(default=list, server_default=EMPTY_LIST)
    custom_fields: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default=EMPTY_MAP)
    created_by: Mapped[str | None] = mapped_column(String(100))
    updated_by: Mapped[str | None] = mapped_column(String(100))
    deleted_at: Mapped[datetime | None]


class ComplianceRequirement(Base, Timestamps):
    __tablename__ = "compliance_requirements"
    __table_args__ = (
        Index("ix_compliance_requirements_tenant_status", "tenant_id", "status"),
        Index("ix_compliance_requirements_tenant_due", "tenant_id", "due_date"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.tenant_id"), index=True)
    title: Mapped[str] = mapped_column(String(500))
    description: Mapped[str | None] = mapped_column(Text)
    framework: Mapped[str] = mapped_column(String(200))
    reference: Mapped[str | None] = mapped_column(String(200))
    owner_id: Mapped[str | None] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(
        String(30), default="not_started", server_default="not_started"
    )
    due_date: Mapped[date | None]
    last_assessed_date: Mapped[date | None]
    policy_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("policies.id"))
    tags: Mapped[list[str]] = mapped_column(default=list, server_default=EMPTY_LIST)
    custom_fields: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default=EMPTY_MAP)
    created_by: Mapped[str | None] = mapped_column(String(100))
    updated_by: Mapped[str | None] = mapped_column(String(100))
    deleted_at: Mapped[datetime | None]


class Sop(Base, Timestamps):
    """A standard operating procedure: a governed document like a policy."""

    __tablename__ = "sops"
    __table_args__ = (
        Index("ix_sops_tenant_status", "tenant_id", "status"),
        Index("ix_sops_tenant_review", "tenant_id", "next_review_date"),
        _one_of("review_frequency", ReviewFrequency),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.tenant_id"), index=True)
    title: Mapped[str] = mapped_column(String(500))
    process_area: Mapped[str] = mapped_column(String(200))
    content: Mapped[str] = mapped_column(Text, default="", server_default="")
    owner_id: Mapped[str | None] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(20), default="draft", server_default="draft")
    version: Mapped[str] = mapped_column(String(50), default="1.0", server_default="1.0")
    effective_date: Mapped[date | None]
    review_frequency: Mapped[str | None] = mapped_column(String(20))
    next_review_date: Mapped[date | None]
    published_date: Mapped[date | None]
    policy_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("policies.id"))
    tags: Mapped[list[str]] = mapped_column(default=list, server_default=EMPTY_LIST)
    custom_fields: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default=EMPTY_MAP)
    created_by: Mapped[str | None] = mapped_column(String(100))
    updated_by: Mapped[str | None] = mapped_column(String(100))
    deleted_at: Mapped[datetime | None]


class PolicyException(Base, Timestamps):
    """A granted (or requested) departure from a policy, until its expiry date."""

    __tablename__ = "policy_exceptions"
    __table_args__ = (
        Index("ix_policy_exceptions_tenant_status", "tenant_id", "status"),
        Index("ix_policy_exceptions_tenant_expiry", "tenant_id", "expiry_date"),
        _one_of("risk_level", RiskLevel),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.tenant_id"), index=True)
    policy_id: Mapped[int] = mapped_column(BigId, ForeignKey("policies.id"))
    title: Mapped[str] = mapped_column(String(500))
    justification: Mapped[str | None] = mapped_column(Text)
    compensating_controls: Mapped[str | None] = mapped_column(Text)
    risk_level: Mapped[str | None] = mapped_column(String(20))
    requested_by: Mapped[str | None] = mapped_column(String(100))
    owner_id: Mapped[str | None] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(20), default="requested", server_default="requested")
    start_date: Mapped[date | None]
    expiry_date: Mapped[date | None]
    tags: Mapped[list[str]] = mapped_column(default=list, server_default=EMPTY_LIST)
    custom_fields: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default=EMPTY_MAP)
    created_by: Mapped[str | None] = mapped_column(String(100))
    updated_by: Mapped[str | None] = mapped_column(String(100))
    deleted_at: Mapped[datetime | None]


class ApprovalDecision(Base):
    """A decision on an approval step, from any writer: the CLI, the API, or another
    application's INSERT (docs/integration.md). Its insert is captured as an
    `approval_decided` change; processing that change applies the decision (`accepted`) or
    refuses it with its `reason`, changing nothing else."""

    __tablename__ = "approval_decisions"
    __table_args__ = (
        Index("ix_approval_decisions_approval", "approval_id"),
        CheckConstraint(
            "decision IN ('approve', 'reject', 'request_changes')", name="known_decision"
        ),
        CheckConstraint("outcome IN ('pending', 'accepted', 'refused')", name="known_outcome"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.tenant_id"))
    approval_id: Mapped[int] = mapped_column(BigId)
    decided_by: Mapped[str] = mapped_column(String(100))
    decision: Mapped[str] = mapped_column(String(30))
    comment: Mapped[str | None] = mapped_column(Text)
    signature: Mapped[dict[str, Any] | None]
    outcome: Mapped[str] = mapped_column(String(20), default="pending", server_default="pending")
    reason: Mapped[str | None] = mapped_column(Text)
    change_id: Mapped[int | None] = mapped_column(BigId)  # set by the capture trigger
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())
    settled_at: Mapped[datetime | None]


class ConsumerCursor(Base):
    """Where a change consumer (`process --sync`) has read up to.

    Not tenant data: one row per consumer name, holding an encoded `ChangeCursor`.
    """

    __tablename__ = "consumer_cursors"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    cursor: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[datetime] = mapped_column(
        default=utcnow, onupdate=utcnow, server_default=func.now()
    )


class RunFence(Base):
    """A Dagster run another worker ended while its process may still live (its worker
    was cut off or died, and its lease expired): that run's late transactions are refused.

    Not tenant data: a run spans tenants. Written once, by the worker that ended the run.
    """

    __tablename__ = "run_fences"

    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    token: Mapped[str] = mapped_column(String(200))  # the lease token of the worker that ended it
    reason: Mapped[str] = mapped_column(Text)
    fenced_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())


class WebhookDelivery(Base, Timestamps):
    """The webhook outbox: written with the execution, sent afterwards with retries."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("action_run_id", name="uq_webhook_deliveries_action_run_id"),
        Index("ix_webhook_deliveries_status", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(100))
    execution_id: Mapped[int] = mapped_column(ForeignKey("workflow_executions.id"))
    action_run_id: Mapped[int] = mapped_column(BigId)
    url: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict[str, Any]]
    secret_env: Mapped[str | None] = mapped_column(String(100))
    timeout_seconds: Mapped[float] = mapped_column(default=5.0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=10)
    status: Mapped[str] = mapped_column(String(20), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime | None]
    delivered_at: Mapped[datetime | None]
    # The action opted out of signing (`unsigned: true`); otherwise a delivery without a
    # signing secret fails instead of going out unsigned.
    unsigned: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class ChangeSkip(Base):
    """The workflows a change did not match, and why: one row per matched change with skips
    (compact skips), written with the change's executions. A replay of the change's
    matching leaves these workflows out."""

    __tablename__ = "change_skips"
    __table_args__ = (Index("ix_change_skips_created", "tenant_id", "created_at"),)

    change_id: Mapped[int] = mapped_column(BigId, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(100))
    # [{"workflow_id": .., "workflow_version": .., "reason": ..}, ...] in workflow order
    workflows: Mapped[list[Any]]
    skipped: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())


class ProcessedChange(Base):
    """A change whose workflows have all been handled; lets a run process an entity's
    earlier changes first, so per-entity order holds whatever order runs start in."""

    __tablename__ = "processed_changes"

    change_id: Mapped[int] = mapped_column(BigId, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(100))
    processed_by: Mapped[str | None] = mapped_column(String(100))
    # `processed`, or `refused` when the change itself was refused (`note` says why).
    outcome: Mapped[str] = mapped_column(
        String(20), default="processed", server_default="processed"
    )
    note: Mapped[str | None] = mapped_column(Text)
    processed_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())


# A row of a governed entity table.
Record = Policy | Risk | ComplianceRequirement | Task | Sop | PolicyException

# The model of each governed entity type (domain/entities.py `KINDS` names their tables).
ENTITY_MODELS: dict[EntityType, type[Record]] = {
    EntityType.POLICY: Policy,
    EntityType.RISK: Risk,
    EntityType.COMPLIANCE_REQUIREMENT: ComplianceRequirement,
    EntityType.TASK: Task,
    EntityType.SOP: Sop,
    EntityType.POLICY_EXCEPTION: PolicyException,
}
