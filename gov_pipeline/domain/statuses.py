"""The domain's closed vocabularies, as lower-case string enums."""

from __future__ import annotations

from enum import StrEnum


class PolicyStatus(StrEnum):
    DRAFT = "draft"
    IN_REVIEW = "in_review"
    APPROVED = "approved"
    PUBLISHED = "published"
    ARCHIVED = "archived"


class RiskStatus(StrEnum):
    IDENTIFIED = "identified"
    ASSESSED = "assessed"
    MITIGATING = "mitigating"
    ACCEPTED = "accepted"
    MONITORED = "monitored"
    CLOSED = "closed"


class RequirementStatus(StrEnum):
    """A compliance requirement's status."""

    NOT_STARTED = "not_started"
    IN_PROGRESS = "in_progress"
    EVIDENCE_SUBMITTED = "evidence_submitted"
    COMPLIANT = "compliant"
    NON_COMPLIANT = "non_compliant"
    NOT_APPLICABLE = "not_applicable"
    RETIRED = "retired"


class ExceptionStatus(StrEnum):
    """A policy exception's status."""

    REQUESTED = "requested"
    UNDER_REVIEW = "under_review"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    REVOKED = "revoked"
    WITHDRAWN = "withdrawn"


class RiskTreatment(StrEnum):
    MITIGATE = "mitigate"
    ACCEPT = "accept"
    TRANSFER = "transfer"
    AVOID = "avoid"


class RiskLevel(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class ReviewFrequency(StrEnum):
    ANNUAL = "annual"
    BIENNIAL = "biennial"
    TRIENNIAL = "triennial"
    QUARTERLY = "quarterly"
    MONTHLY = "monthly"
    AS_NEEDED = "as_needed"


class ChangeKind(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    STATUS_CHANGED = "status_changed"
    DELETED = "deleted"
    APPROVAL_DECIDED = "approval_decided"


class ChangeOutcome(StrEnum):
    """What processing made of a change (its processed marker)."""

    PROCESSED = "processed"
    REFUSED = "refused"  # the change itself was refused (a decision naming another tenant's)


class RunOutcome(StrEnum):
    """A Dagster run's governance outcome (its `gov/outcome` tag)."""

    OK = "ok"  # every execution it ran completed (or there was nothing to run)
    AWAITING_APPROVAL = "awaiting_approval"  # one of them waits for approvers
    FAILED = "failed"  # one of them failed: the run fails too


class EntityType(StrEnum):
    POLICY = "policy"
    RISK = "risk"
    COMPLIANCE_REQUIREMENT = "compliance_requirement"
    TASK = "task"
    SOP = "sop"
    POLICY_EXCEPTION = "policy_exception"


class WorkflowType(StrEnum):
    APPROVAL = "approval"
    NOTIFICATION = "notification"
    ESCALATION = "escalation"
    STATUS_CHANGE = "status_change"
    DEADLINE_REMINDER = "deadline_reminder"


class WorkflowStatus(StrEnum):
    ACTIVE = "active"
    INACTIVE = "inactive"
    ARCHIVED = "archived"


class Trigger(StrEnum):
    ON_CREATE = "on_create"
    ON_UPDATE = "on_update"
    ON_STATUS_CHANGE = "on_status_change"
    MANUAL = "manual"
    ON_DEADLINE_APPROACHING = "on_deadline_approaching"
    ON_DEADLINE_PASSED = "on_deadline_passed"
    SCHEDULED = "scheduled"
    ON_APPROVAL_DECIDED = "on_approval_decided"


class ExecutionStatus(StrEnum):
    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    AWAITING_APPROVAL = "awaiting_approval"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"


class ActionRunStatus(StrEnum):
    PENDING = "pending"
    COMPLETED = "completed"
    FAILED = "failed"


class ApprovalStatus(StrEnum):
    WAITING = "waiting"  # sequential step not yet reached
    PENDING = "pending"  # asked, awaiting a decision
    APPROVED = "approved"
    REJECTED = "rejected"
    CHANGES_REQUESTED = "changes_requested"
    SKIPPED = "skipped"  # the flow ended before this step was reached
    WITHDRAWN = "withdrawn"  # its execution was cancelled before the step was decided


# The steps still open: asked, or waiting for the steps before them. Every other status is
# closed for good (decided, skipped or withdrawn).
OPEN_APPROVAL_STATUSES = frozenset({ApprovalStatus.WAITING, ApprovalStatus.PENDING})


class DeliveryStatus(StrEnum):
    """A webhook delivery in the outbox."""

    PENDING = "pending"  # to be sent (again)
    DELIVERED = "delivered"
    FAILED = "failed"  # its attempts ran out
    CANCELLED = "cancelled"  # its execution was cancelled before it was sent


class EmailStatus(StrEnum):
    """An email in the outbox (`email_deliveries`)."""

    PENDING = "pending"  # to be sent (again)
    SENT = "sent"  # the SMTP server accepted it
    FAILED = "failed"  # its attempts ran out, or its address is unusable


class ApprovalMode(StrEnum):
    SEQUENTIAL = "sequential"
    PARALLEL = "parallel"


class NotificationType(StrEnum):
    WORKFLOW_APPROVAL_REQUIRED = "workflow_approval_required"
    WORKFLOW_APPROVED = "workflow_approved"
    WORKFLOW_REJECTED = "workflow_rejected"
    WORKFLOW_COMPLETED = "workflow_completed"
    TASK_ASSIGNED = "task_assigned"
    TASK_DUE_SOON = "task_due_soon"
    DEADLINE_APPROACHING = "deadline_approaching"
    DEADLINE_PASSED = "deadline_passed"
    POLICY_REVIEW_REQUIRED = "policy_review_required"
    GENERAL = "general"


class NotificationPriority(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    URGENT = "urgent"


class TaskPriority(StrEnum):
    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


class TaskStatus(StrEnum):
    TODO = "todo"
    IN_PROGRESS = "in_progress"
    DONE = "done"
    CANCELLED = "cancelled"


class Role(StrEnum):
    ADMIN = "admin"
    COMPLIANCE_OFFICER = "compliance_officer"
    RISK_MANAGER = "risk_manager"
    POLICY_OWNER = "policy_owner"
    AUDITOR = "auditor"
    VIEWER = "viewer"


# The action-run key of the notice a failed execution's owner gets (one per failure).
FAILURE_NOTICE = "failure-notice"
