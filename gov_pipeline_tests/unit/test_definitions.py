"""Unit tests for workflow definitions (gov_pipeline.domain.definitions)."""

from __future__ import annotations

import copy
import json
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from gov_pipeline.domain.definitions import (
    AssignAction,
    ChangeStatusAction,
    CreateTaskAction,
    NotifyAction,
    RequestApprovalAction,
    WebhookAction,
    WorkflowDefinition,
    load_definition_file,
    load_definitions,
    parse_definition,
)
from gov_pipeline.domain.errors import DefinitionError
from gov_pipeline.domain.statuses import (
    ApprovalMode,
    NotificationPriority,
    NotificationType,
    PolicyStatus,
    Role,
    TaskPriority,
    Trigger,
)

FULL_YAML = """
name: Information security policy approval
description: Route infosec policies through compliance review.
tenant_id: acme-corp
type: approval
trigger: on_status_change
entity_type: policy
priority: 10
owner_id: u-owner
conditions:
  all:
    - field: new.status
      op: changed_to
      value: in_review
    - policy_type: Information Security
    - any:
        - {field: entity.custom_fields.risk_level, op: in, value: [high, critical]}
        - not: {field: new.owner_id, op: exists}
actions:
  - type: notify
    id: tell-reviewers
    roles: [compliance_officer]
    users: [u1]
    include_owner: true
    notification_type: workflow_approval_required
    priority: high
    title: Policy awaiting review
    message: Please review.
  - type: assign
    user: u-reviewer
  - type: create_task
    title: Review the policy
    priority: high
    due_date: 2024-06-30
    assignee: owner
  - type: webhook
    url: http://internal.example:8080/hook
  - type: request_approval
    mode: parallel
    steps:
      - name: Compliance
        approvers: {roles: [compliance_officer]}
        due_in_hours: 48
      - approvers: {users: [u-ciso]}
    on_approved:
      - {type: change_status, to: approved, reason: Approved by compliance}
      - type: webhook
        url: https://hooks.example.com/policy
        secret_env: POLICY_HOOK_SECRET
        timeout_seconds: 2.5
        max_attempts: 3
    on_rejected:
      - {type: change_status, to: archived}
    on_changes_requested:
      - {type: change_status, to: draft}
      - {type: notify, include_owner: true, title: Changes requested}
"""

MINIMAL: dict[str, Any] = {
    "name": "Publication notice",
    "tenant_id": "t1",
    "type": "notification",
    "trigger": "on_status_change",
    "actions": [{"type": "notify", "roles": ["admin"], "title": "Published"}],
}


def with_(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(MINIMAL)
    data.update(changes)
    return data


def issues_of(data: object) -> list[tuple[str, str]]:
    with pytest.raises(DefinitionError) as info:
        parse_definition(data, source="test.yaml")
    assert info.value.source == "test.yaml"
    return [(issue.path, issue.message) for issue in info.value.issues]


def paths_of(data: object) -> list[str]:
    return [path for path, _ in issues_of(data)]


def test_full_definition_parses_every_action_type() -> None:
    (definition,) = load_definitions(FULL_YAML, "yaml", "full.yaml")
    notify, assign, task, webhook, approval = definition.actions
    assert isinstance(notify, NotifyAction)
    assert notify.id == "tell-reviewers"
    assert notify.roles == [Role.COMPLIANCE_OFFICER]
    assert notify.notification_type is NotificationType.WORKFLOW_APPROVAL_REQUIRED
    assert notify.priority is NotificationPriority.HIGH
    assert isinstance(assign, AssignAction)
    assert assign.target == "assignee"
    assert isinstance(task, CreateTaskAction)
    assert task.due_date == date(2024, 6, 30)
    assert task.priority is TaskPriority.HIGH
    assert isinstance(approval, RequestApprovalAction)
    assert approval.mode is ApprovalMode.PARALLEL
    assert approval.steps[0].due_in_hours == 48.0
    assert approval.steps[1].approvers.users == ["u-ciso"]
    change, hook = approval.on_approved
    assert isinstance(change, ChangeStatusAction)
    assert change.to == PolicyStatus.APPROVED
    assert isinstance(hook, WebhookAction)
    assert (hook.secret_env, hook.timeout_seconds, hook.max_attempts) == (
        "POLICY_HOOK_SECRET",
        2.5,
        3,
    )
    assert isinstance(webhook, WebhookAction)
    assert (webhook.timeout_seconds, webhook.max_attempts) == (5.0, 10)
    assert definition.trigger is Trigger.ON_STATUS_CHANGE
    assert definition.priority == 10


def test_compiled_conditions_of_a_definition() -> None:
    (definition,) = load_definitions(FULL_YAML, "yaml", "full.yaml")
    context = {
        "old": {"status": "draft"},
        "new": {"status": "in_review", "policy_type": "Information Security"},
        "changed": ["status"],
        "entity": {"custom_fields": {"risk_level": "high"}},
    }
    compiled = definition.compiled_conditions()
    assert compiled.evaluate(context) is True
    context["new"]["policy_type"] = "Finance"
    assert compiled.explain(context) == ["policy_type eq 'Information Security' (was 'Finance')"]


def test_defaults() -> None:
    definition = parse_definition(MINIMAL)
    assert definition.status == "active"
    assert definition.entity_type == "policy"
    assert definition.conditions is None
    assert definition.compiled_conditions().evaluate({}) is True
    assert (definition.priority, definition.days_before_deadline, definition.owner_id) == (
        0,
        None,
        None,
    )


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {k: v for k, v in MINIMAL.items() if k != "name"},
            [("name", "required field is missing")],
        ),
        (with_(actions=[{"type": "frobnicate"}]), [("actions[0].type", "unknown action type")]),
        (with_(actions=[{"to": "draft"}]), [("actions[0].type", "missing action 'type'")]),
        (
            with_(actions=[{"type": "change_status", "to": "published_x"}]),
            [("actions[0].to", "'published_x' is not a policy status (one of: draft, ")],
        ),
        (
            with_(actions=[{"type": "webhook", "url": "ftp://example.com/x"}]),
            [("actions[0].url", "expected an http:// or https:// URL")],
        ),
        (
            with_(actions=[{"type": "webhook", "url": "https://u:secret@example.com"}]),
            [("actions[0].url", "credentials do not belong in the URL")],
        ),
        (
            with_(
                actions=[
                    {
                        "type": "request_approval",
                        "steps": [{"approvers": {"roles": ["admin"]}}],
                        "on_rejected": [
                            {"type": "request_approval", "steps": [{"approvers": {"users": ["u"]}}]}
                        ],
                    }
                ]
            ),
            [("actions[0].on_rejected[0].type", "request_approval cannot be nested")],
        ),
        (
            with_(trigger="on_deadline_approaching"),
            [("days_before_deadline", "required when trigger is on_deadline_approaching")],
        ),
        (
            with_(conditions={"any": [{"status": "draft"}, {"field": "new.status", "op": "is"}]}),
            [("conditions.any[1].op", "unknown operator 'is'")],
        ),
        (with_(extra=1), [("extra", "unknown key")]),
        (with_(tenant_id="acme corp"), [("tenant_id", "String should match pattern")]),
        (with_(name=""), [("name", "String should have at least 1 character")]),
        (with_(priority="5"), [("priority", "Input should be a valid integer")]),
        (with_(priority=101), [("priority", "less than or equal to 100")]),
        (with_(days_before_deadline=-1), [("days_before_deadline", "greater than or equal to 0")]),
        (with_(actions=[]), [("actions", "List should have at least 1 item")]),
        (
            with_(actions=[{"type": "notify", "title": "x"}]),
            [("actions[0]", "notify needs a recipient")],
        ),
        (
            with_(actions=[{"type": "notify", "include_owner": "yes", "title": "x"}]),
            [("actions[0].include_owner", "Input should be a valid boolean")],
        ),
        (
            with_(
                actions=[
                    {
                        "type": "create_task",
                        "title": "t",
                        "due_in_days": 1,
                        "due_date": "2024-01-01",
                    }
                ]
            ),
            [("actions[0]", "give due_in_days or due_date, not both")],
        ),
        (
            with_(
                actions=[
                    {"type": "create_task", "title": "t", "due_date": datetime(2024, 1, 1, 10)}
                ]
            ),
            [("actions[0].due_date", "expected a date")],
        ),
        (
            with_(actions=[{"type": "create_task", "title": "t", "due_date": 1_700_000_000}]),
            [("actions[0].due_date", "expected a date")],
        ),
        (
            with_(actions=[{"type": "create_task", "title": "t", "due_in_days": True}]),
            [("actions[0].due_in_days", "Input should be a valid integer")],
        ),
        (
            with_(actions=[{"type": "assign", "user": "u", "target": "boss"}]),
            [("actions[0].target", "Input should be 'owner' or 'assignee'")],
        ),
        (
            with_(actions=[{"type": "request_approval", "steps": []}]),
            [("actions[0].steps", "List should have at least 1 item")],
        ),
        (
            with_(
                actions=[
                    {"type": "request_approval", "steps": [{"approvers": {}, "due_in_hours": 0}]}
                ]
            ),
            [
                ("actions[0].steps[0].approvers", "a step needs approver users or roles"),
                ("actions[0].steps[0].due_in_hours", "greater than 0"),
            ],
        ),
        (
            with_(actions=[{"type": "webhook", "url": "https://x.example", "timeout_seconds": 31}]),
            [("actions[0].timeout_seconds", "less than or equal to 30")],
        ),
        (
            with_(actions=[{"type": "webhook", "url": "https://x.example", "max_attempts": 11}]),
            [("actions[0].max_attempts", "less than or equal to 10")],
        ),
        (
            with_(
                actions=[
                    {"type": "webhook", "url": "https://x.example", "secret_env": "s3cr3t-value!"}
                ]
            ),
            [("actions[0].secret_env", "String should match pattern")],
        ),
        (
            with_(actions=[{"type": "assign", "user": "u", "id": "Step 1"}]),
            [("actions[0].id", "String should match pattern")],
        ),
        (
            with_(
                actions=[
                    {"type": "assign", "user": "u", "id": "a"},
                    {"type": "assign", "user": "v", "id": "a"},
                ]
            ),
            [("actions", "duplicate action id 'a'")],
        ),
        (with_(webhook=1), [("webhook", "unknown key")]),  # a key named like an action tag
        (None, [("", "a definition is a mapping, got null")]),
        (["x"], [("", "a definition is a mapping, got list")]),
    ],
)
def test_bad_definition(data: object, expected: list[tuple[str, str]]) -> None:
    issues = issues_of(data)
    assert [path for path, _ in issues] == [path for path, _ in expected]
    for (_, message), (_, words) in zip(issues, expected, strict=True):
        assert words in message, message


def test_every_issue_is_reported_at_once() -> None:
    data = {
        "tenant_id": "t1",
        "type": "approval",
        "trigger": "on_deadline_approaching",
        "conditions": {"all": [{"field": "foo.bar", "op": "eq", "value": 1}, {"op": "gt"}]},
        "actions": [
            {"type": "change_status", "to": "published_x"},
            {"type": "nope"},
            {"type": "webhook", "url": "mailto:a@b.c"},
            {
                "type": "request_approval",
                "steps": [{"approvers": {"roles": ["auditor"]}}],
                "on_approved": [{"type": "notify", "roles": ["admin"], "title": "ok"}],
                "on_changes_requested": [{"type": "request_approval", "steps": []}],
            },
        ],
    }
    assert paths_of(data) == [
        "name",
        "conditions.all[0].field",
        "conditions.all[1].field",
        "conditions.all[1].value",
        "actions[0].to",
        "actions[1].type",
        "actions[2].url",
        "actions[3].on_changes_requested[0].type",
        "days_before_deadline",
    ]


def test_strict_types() -> None:
    assert paths_of(with_(name=5)) == ["name"]
    assert paths_of(with_(actions=[{"type": "notify", "users": [1], "title": "t"}])) == [
        "actions[0].users[0]"
    ]
    assert paths_of(
        with_(actions=[{"type": "webhook", "url": "https://x.example", "timeout_seconds": "5"}])
    ) == ["actions[0].timeout_seconds"]
    webhook = parse_definition(
        with_(actions=[{"type": "webhook", "url": "https://x", "timeout_seconds": 3}])
    )
    assert webhook.actions[0].timeout_seconds == 3.0  # type: ignore[union-attr]


def test_a_webhook_may_opt_out_of_signing_explicitly() -> None:
    hook = {"type": "webhook", "url": "https://x.example/in"}
    signed = parse_definition(with_(actions=[hook]))
    assert signed.actions[0].unsigned is False  # type: ignore[union-attr]
    unsigned = parse_definition(with_(actions=[{**hook, "unsigned": True}]))
    assert unsigned.actions[0].unsigned is True  # type: ignore[union-attr]
    assert unsigned.fingerprint() != signed.fingerprint()
    assert issues_of(with_(actions=[{**hook, "unsigned": "yes"}])) == [
        ("actions[0].unsigned", "Input should be a valid boolean")
    ]
    assert issues_of(with_(actions=[{**hook, "unsigned": True, "secret_env": "HOOK_KEY"}])) == [
        ("actions[0]", "give secret_env or unsigned: true, not both")
    ]


def test_deadline_trigger_with_days() -> None:
    definition = parse_definition(with_(trigger="on_deadline_approaching", days_before_deadline=14))
    assert definition.days_before_deadline == 14


def test_model_is_frozen() -> None:
    definition = parse_definition(MINIMAL)
    with pytest.raises(ValueError, match="frozen"):
        definition.name = "other"  # type: ignore[misc]


# --- loading ----------------------------------------------------------------------------------


def test_json_and_yaml_give_the_same_definition() -> None:
    (from_yaml,) = load_definitions(FULL_YAML, "yaml", "full.yaml")
    as_json = json.dumps(yaml.safe_load(FULL_YAML), default=str)
    (from_json,) = load_definitions(as_json, "json", "full.json")
    assert from_json == from_yaml
    assert from_json.fingerprint() == from_yaml.fingerprint()


def test_list_file_collects_issues_of_every_definition() -> None:
    bad_action = {"type": "change_status", "to": "nowhere"}
    text = json.dumps([MINIMAL, with_(actions=[bad_action]), with_(name=None), 7])
    with pytest.raises(DefinitionError) as info:
        load_definitions(text, "json", "many.json")
    assert info.value.source == "many.json"
    assert [issue.path for issue in info.value.issues] == ["[1].actions[0].to", "[2].name", "[3]"]
    assert str(info.value).startswith("many.json: [1].actions[0].to: ")


def test_list_file_loads_in_order() -> None:
    text = yaml.safe_dump([MINIMAL, with_(name="Second")])
    assert [d.name for d in load_definitions(text, "yaml", "two.yaml")] == [
        MINIMAL["name"],
        "Second",
    ]
    assert load_definitions("[]", "json", "none.json") == []


def test_duplicate_names_in_a_file() -> None:
    text = json.dumps([MINIMAL, with_(name="Other"), MINIMAL])
    with pytest.raises(DefinitionError) as info:
        load_definitions(text, "json", "dup.json")
    (issue,) = info.value.issues
    assert issue.path == "[2].name"
    assert "duplicate workflow name" in issue.message


@pytest.mark.parametrize(
    ("text", "fmt", "words"),
    [
        ("name: [unclosed", "yaml", "invalid YAML"),
        ("!!python/object/apply:os.system ['true']", "yaml", "invalid YAML"),  # safe_load only
        ('{"name": ', "json", "invalid JSON"),
        ("[" * 100_000, "json", "nested too deeply"),
        ("", "yaml", "empty document"),
        ("just a string", "yaml", "got str"),
        ("name: x", "toml", "unknown format 'toml'"),
    ],
)
def test_load_errors(text: str, fmt: str, words: str) -> None:
    with pytest.raises(DefinitionError) as info:
        load_definitions(text, fmt, "src")
    assert info.value.source == "src"
    assert words in str(info.value)


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".json", ".YAML"])
def test_load_definition_file(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"wf{suffix}"
    data = yaml.safe_load(FULL_YAML)
    path.write_text(json.dumps(data, default=str) if suffix == ".json" else FULL_YAML)
    (definition,) = load_definition_file(path)
    assert definition.name == "Information security policy approval"


def test_load_definition_file_errors(tmp_path: Path) -> None:
    for path, words in [
        (tmp_path / "wf.txt", "unsupported file type '.txt'"),
        (tmp_path / "missing.yaml", "cannot read file"),
        (tmp_path / "binary.yaml", "cannot read file"),
        (tmp_path / "broken.yml", "invalid YAML"),
        (tmp_path / "bad.json", "actions[0].to"),
    ]:
        if path.name == "binary.yaml":
            path.write_bytes(b"\xff\xfe\x00bad")
        if path.name == "broken.yml":
            path.write_text("a: b: c")
        if path.name == "bad.json":
            path.write_text(json.dumps(with_(actions=[{"type": "change_status", "to": "x"}])))
        with pytest.raises(DefinitionError) as info:
            load_definition_file(path)
        assert info.value.source == str(path)
        assert words in str(info.value)


# --- fingerprint ------------------------------------------------------------------------------


def test_fingerprint_is_stable_across_key_order_and_explicit_defaults() -> None:
    reordered = dict(reversed(list(MINIMAL.items())))
    explicit = with_(status="active", priority=0, description="", conditions=None)
    first = parse_definition(MINIMAL).fingerprint()
    assert len(first) == 64
    assert int(first, 16) >= 0
    assert parse_definition(reordered).fingerprint() == first
    assert parse_definition(explicit).fingerprint() == first
    conditions_a = with_(conditions={"status": "draft", "policy_type": "x"})
    conditions_b = with_(conditions={"policy_type": "x", "status": "draft"})
    assert (
        parse_definition(conditions_a).fingerprint() == parse_definition(conditions_b).fingerprint()
    )


@pytest.mark.parametrize(
    "changes",
    [
        {"name": "Publication notice v2"},
        {"status": "inactive"},
        {"conditions": {"status": "published"}},
        {"actions": [{"type": "notify", "roles": ["admin"], "title": "Published!"}]},
    ],
)
def test_fingerprint_changes_with_content(changes: dict[str, Any]) -> None:
    assert (
        parse_definition(with_(**changes)).fingerprint() != parse_definition(MINIMAL).fingerprint()
    )


# --- property test ----------------------------------------------------------------------------

SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
FIELD_NAMES = st.sampled_from(
    [
        "name",
        "tenant_id",
        "type",
        "trigger",
        "actions",
        "conditions",
        "priority",
        "days_before_deadline",
    ]
)
ACTION = st.dictionaries(
    st.sampled_from(
        ["type", "to", "users", "roles", "title", "url", "steps", "on_approved", "user"]
    ),
    st.sampled_from(["notify", "webhook", "request_approval", "change_status", "assign", "draft"])
    | st.lists(st.sampled_from(["admin", "u1"]), max_size=2)
    | JSON,
)
GOOD_VALUES = st.sampled_from(
    ["approval", "manual", "t1", "Workflow", "on_deadline_approaching", 3]
)


@settings(max_examples=300, deadline=None)
@given(
    data=JSON
    | st.dictionaries(FIELD_NAMES, GOOD_VALUES | st.lists(ACTION, max_size=3) | JSON)
    | st.builds(
        lambda extra: {**MINIMAL, **extra}, st.dictionaries(FIELD_NAMES, JSON | GOOD_VALUES)
    )
)
def test_parse_definition_raises_only_definition_error(data: object) -> None:
    try:
        definition = parse_definition(data)
    except DefinitionError as exc:
        assert exc.issues
        return
    assert isinstance(definition, WorkflowDefinition)
    assert len(definition.fingerprint()) == 64
    definition.compiled_conditions().evaluate({})


def test_request_approval_must_be_last_and_single() -> None:
    base = {"name": "w", "tenant_id": "acme", "type": "approval", "trigger": "on_update"}
    approval = {"type": "request_approval", "steps": [{"approvers": {"users": ["u1"]}}]}
    notify = {"type": "notify", "users": ["u1"], "title": "t"}
    parse_definition({**base, "actions": [notify, approval]})
    for actions, needle in (
        ([approval, notify], "must be the last action"),
        ([approval, approval], "at most one request_approval"),
    ):
        with pytest.raises(DefinitionError) as err:
            parse_definition({**base, "actions": actions})
        assert any(i.path == "actions" and needle in i.message for i in err.value.issues)


def test_the_fields_added_later_leave_the_fingerprint_of_older_files_alone() -> None:
    """A definition stored before `schedule` and the step rules existed: its canonical JSON
    as the models then dumped it (without those keys) is still its fingerprint."""
    import hashlib
    import json

    step = {"approvers": {"roles": ["admin"]}}
    data = with_(actions=[{"type": "request_approval", "steps": [step]}])
    definition = parse_definition(data)
    then = definition.model_dump(mode="json")
    del then["schedule"]
    for key in ("quorum", "allow_delegation", "escalation"):
        del then["actions"][0]["steps"][0][key]
    canonical = json.dumps(then, sort_keys=True, separators=(",", ":"))
    assert definition.fingerprint() == hashlib.sha256(canonical.encode()).hexdigest()
    ruled = with_(actions=[{"type": "request_approval", "steps": [{**step, "quorum": 2}]}])
    assert parse_definition(ruled).fingerprint() != definition.fingerprint()
