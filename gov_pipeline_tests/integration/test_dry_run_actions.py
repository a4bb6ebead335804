"""`workflows dry-run` checks each planned action, follow-up lists included, with the checks
the action makes when it runs, and says why it would fail — writing nothing."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from gov_pipeline.config import Settings
from gov_pipeline.db.models import Base, User, WebhookDelivery, WorkflowExecution
from gov_pipeline.domain.definitions import parse_definition
from gov_pipeline.engine.dry_run import dry_run
from gov_pipeline.runners.deliveries import send_once
from gov_pipeline.services.tenants import upsert_user
from gov_pipeline.services.workflows import COMPILED
from gov_pipeline_tests.integration.engine_support import (
    apply_yaml,
    cli_invoker,
    make_settings,
    new_policy,
    process,
)

ROOT = Path(__file__).resolve().parents[2]
TENANT = "acme"
ALLOWED = "url: host {0!r} is not allow-listed (allowed: {1}; add it to GOV_PIPELINE_WEBHOOK_ALLOWED_HOSTS)"
NO_DEFAULT_KEY = (
    "no signing secret: GOV_PIPELINE_WEBHOOK_SECRET is not set in this process; "
    "refusing to send unsigned"
)
NO_HOOK_KEY = (
    "no signing secret: HOOK_KEY and GOV_PIPELINE_WEBHOOK_SECRET are not set in this process; "
    "refusing to send unsigned"
)


@pytest.fixture
def people(sessions: sessionmaker[Session], tenant: str) -> dict[str, int]:
    """carol (compliance officer) and olivia (policy owner) are active users of acme; dora
    (risk manager) is inactive; gina (auditor) is a user of globex only. Returns the draft
    policies: owned by olivia, without owner, owned by oscar (no user)."""
    with sessions.begin() as session:
        for tenant_id, user, role in (
            (TENANT, "carol", "compliance_officer"), (TENANT, "olivia", "policy_owner"),
            (TENANT, "dora", "risk_manager"), ("globex", "gina", "auditor"),
        ):  # fmt: skip
            upsert_user(session, tenant_id=tenant_id, user_id=user, roles=[role])
        dora = session.get(User, (TENANT, "dora"))
        assert dora is not None
        dora.active = False
    return {
        "owned": new_policy(sessions),
        "ownerless": new_policy(sessions, owner_id=None),
        "stranger": new_policy(sessions, owner_id="oscar"),
    }


def _definition(actions: list[dict[str, Any]]) -> dict[str, Any]:
    return {"name": "checked", "tenant_id": TENANT, "type": "notification",
            "trigger": "on_create", "actions": actions}  # fmt: skip


def _report(
    sessions: sessionmaker[Session], settings: Settings, actions: list[dict[str, Any]], pid: int
) -> dict[str, Any]:
    with sessions.begin() as session:
        return dry_run(
            session, parse_definition(_definition(actions)), entity_id=pid, settings=settings
        )


def _checks(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """step -> "ok" or its reasons, follow-up lists included."""
    found: dict[str, Any] = {}
    for entry in entries:
        assert (entry["check"] == "ok") == ("would_fail" not in entry), entry
        found[entry["step"]] = entry.get("would_fail", entry["check"])
        for name in ("on_approved", "on_rejected", "on_changes_requested"):
            found |= _checks(entry.get(name, []))
    return found


APPROVAL_OK = {
    "type": "request_approval",
    "steps": [{"name": "Compliance", "approvers": {"roles": ["compliance_officer"]}},
              {"approvers": {"users": ["olivia"]}}],
    "on_approved": [{"type": "change_status", "to": "approved"}],
    "on_rejected": [{"type": "change_status", "to": "draft"}],
    # Sent back to draft first, so in_review is a move again.
    "on_changes_requested": [{"type": "change_status", "to": "in_review"}],
}  # fmt: skip
ALL_OK = [
    {"type": "notify", "users": ["carol"], "roles": ["policy_owner"], "include_owner": True,
     "title": "t"},
    {"type": "change_status", "to": "in_review"},
    {"type": "webhook", "url": "http://127.0.0.1:8765/a"},
    {"type": "webhook", "url": "http://127.0.0.1:8765/b", "unsigned": True},
    {"type": "create_task", "title": "t", "assignee": "owner"},
    {"type": "create_task", "title": "t", "assignee": "carol"},
    {"type": "create_task", "title": "t"},
    {"type": "assign", "user": "carol"},
    APPROVAL_OK,
]  # fmt: skip

# (case, policy, actions, extra settings, step -> "ok" or reasons)
CASES: list[tuple[str, str, list[dict[str, Any]], dict[str, str], dict[str, Any]]] = [
    ("all ok", "owned", ALL_OK, {},
     {**{str(i): "ok" for i in range(9)}, "on_approved.0": "ok", "on_rejected.0": "ok",
      "on_changes_requested.0": "ok"}),
    ("illegal move", "owned", [{"type": "change_status", "to": "published"}], {},
     {"0": ["illegal status transition: draft -> published"]}),
    ("the status it has", "owned", [{"type": "change_status", "to": "draft"}], {},
     {"0": ["illegal status transition: draft -> draft"]}),
    ("an earlier move counts", "owned",
     [{"type": "change_status", "to": "in_review", "id": "submit"},
      {"type": "change_status", "to": "in_review", "id": "again"},
      {**APPROVAL_OK, "id": "ask", "on_approved": [{"type": "change_status", "to": "published"}]}],
     {},
     {"submit": "ok", "again": ["illegal status transition: in_review -> in_review"], "ask": "ok",
      "on_approved.0": ["illegal status transition: in_review -> published"],
      "on_rejected.0": "ok", "on_changes_requested.0": "ok"}),
    ("host not allowed", "owned",
     [{"type": "webhook", "url": "https://hooks.example.com/x"},
      {"type": "webhook", "url": "http://127.0.0.1:9999/x"}],
     {"GOV_PIPELINE_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1:8765"},
     {"0": [ALLOWED.format("hooks.example.com:443", "127.0.0.1:8765")],
      "1": [ALLOWED.format("127.0.0.1:9999", "127.0.0.1:8765")]}),
    ("no signing secret", "owned",
     [{"type": "webhook", "url": "http://127.0.0.1/a"},
      {"type": "webhook", "url": "http://127.0.0.1/b", "secret_env": "HOOK_KEY"},
      {"type": "webhook", "url": "http://127.0.0.1/c", "secret_env": "SET_HOOK_KEY"},
      {"type": "webhook", "url": "http://127.0.0.1/d", "unsigned": True}],
     {"GOV_PIPELINE_WEBHOOK_SECRET": ""},
     {"0": [NO_DEFAULT_KEY], "1": [NO_HOOK_KEY], "2": "ok", "3": "ok"}),
    ("unknown or inactive users", "owned",
     [{"type": "notify", "users": ["ghost", "dora", "gina", "carol"], "title": "t"}], {},
     {"0": ["user 'ghost' not found in tenant 'acme'", "user 'dora' is inactive in tenant 'acme'",
            "user 'gina' not found in tenant 'acme'"]}),
    ("roles nobody active holds", "owned",
     [{"type": "notify", "roles": ["auditor", "risk_manager", "compliance_officer"],
       "title": "t"}], {},
     {"0": ["no active user of tenant 'acme' holds role 'auditor'",
            "no active user of tenant 'acme' holds role 'risk_manager'"]}),
    ("owner missing or unknown", "ownerless",
     [{"type": "notify", "include_owner": True, "title": "t"},
      {"type": "assign", "user": "oscar", "target": "owner"},
      {"type": "notify", "include_owner": True, "title": "t"},
      {"type": "assign", "user": "carol", "target": "owner"},
      {"type": "notify", "include_owner": True, "title": "t"}], {},
     {"0": ["policy {ownerless} has no owner"], "1": ["user 'oscar' not found in tenant 'acme'"],
      "2": ["owner of policy {ownerless}: user 'oscar' not found in tenant 'acme'"],
      "3": "ok", "4": "ok"}),
    ("approvers nobody could be", "owned",
     [{"type": "request_approval",
       "steps": [{"name": "Legal", "approvers": {"users": ["ghost"], "roles": ["auditor"]}},
                 {"approvers": {"users": ["dora"]}}]}], {},
     {"0": ["step 'Legal': user 'ghost' not found in tenant 'acme'",
            "step 'Legal': no active user of tenant 'acme' holds role 'auditor'",
            "step 2: user 'dora' is inactive in tenant 'acme'"]}),
    ("unknown task assignee", "ownerless",
     [{"type": "create_task", "title": "t", "assignee": "ghost"},
      {"type": "create_task", "title": "t", "assignee": "owner"}], {},
     {"0": ["user 'ghost' not found in tenant 'acme'"], "1": ["policy {ownerless} has no owner"]}),
    ("unknown user assigned", "owned",
     [{"type": "assign", "user": "ghost"}, {"type": "assign", "user": "dora", "target": "owner"}],
     {},
     {"0": ["user 'ghost' not found in tenant 'acme'"],
      "1": ["user 'dora' is inactive in tenant 'acme'"]}),
]  # fmt: skip


@pytest.mark.parametrize(("policy", "actions", "env", "expected"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_each_action_says_whether_and_why_it_would_fail(
    sessions: sessionmaker[Session],
    db_url: str,
    people: dict[str, int],
    monkeypatch: pytest.MonkeyPatch,
    policy: str,
    actions: list[dict[str, Any]],
    env: dict[str, str],
    expected: dict[str, Any],
) -> None:
    monkeypatch.delenv("HOOK_KEY", raising=False)
    monkeypatch.setenv("SET_HOOK_KEY", "its-own-key")
    settings = make_settings(db_url, **env)
    report = _report(sessions, settings, actions, people[policy])
    wanted = {
        step: check if check == "ok" else [r.format(**people) for r in check]
        for step, check in expected.items()
    }
    assert _checks(report["actions"]) == wanted


def test_the_follow_ups_are_nested_in_their_request_and_keep_the_plan(
    sessions: sessionmaker[Session], db_url: str, people: dict[str, int]
) -> None:
    report = _report(sessions, make_settings(db_url), [APPROVAL_OK], people["owned"])
    (entry,) = report["actions"]
    assert entry["step"] == "0" and entry["note"].startswith("the execution waits")
    assert entry["steps"][0]["name"] == "Compliance"
    (approved,) = entry["on_approved"]
    assert approved == {"step": "on_approved.0", "type": "change_status", "to": "approved",
                        "check": "would fail",
                        "would_fail": ["illegal status transition: draft -> approved"]}  # fmt: skip


def _counts(sessions: sessionmaker[Session]) -> dict[str, int]:
    with sessions.begin() as session:
        return {
            table.name: int(session.scalar(select(func.count()).select_from(table)) or 0)
            for table in Base.metadata.sorted_tables
        }


def test_checking_writes_nothing(
    sessions: sessionmaker[Session], db_url: str, people: dict[str, int]
) -> None:
    settings = make_settings(db_url, GOV_PIPELINE_WEBHOOK_SECRET="")
    every = [action for _, _, actions, _, _ in CASES for action in actions]
    # One request_approval per definition, last: the others' steps are checked one by one.
    approvals = [a for a in every if a["type"] == "request_approval"]
    before = _counts(sessions)
    assert before["users"] == 4 and before["policies"] == 3  # counting counts something
    for approval in approvals:
        others = [a for a in every if a["type"] != "request_approval"]
        for pid in people.values():
            report = _report(sessions, settings, [*others, approval], pid)
            assert any(e["check"] == "would fail" for e in report["actions"])
    assert _counts(sessions) == before


def _execution_error(sessions: sessionmaker[Session]) -> str:
    with sessions.begin() as session:
        (execution,) = session.scalars(select(WorkflowExecution)).all()
        assert execution.status == "failed"
        return str(execution.error)


@pytest.mark.parametrize(
    "action",
    [{"type": "change_status", "to": "published"}, {"type": "change_status", "to": "draft"},
     {"type": "webhook", "url": "https://hooks.example.com/x"}],
    ids=["illegal move", "the status it has", "host not allowed"],
)  # fmt: skip
def test_the_reason_is_the_one_the_running_action_fails_with(
    sessions: sessionmaker[Session], db_url: str, people: dict[str, int], action: dict[str, Any]
) -> None:
    settings = make_settings(db_url)
    (reason,) = _report(sessions, settings, [action], people["owned"])["actions"][0]["would_fail"]
    process(sessions, settings)  # the fixture's policies, before the workflow exists
    apply_yaml(sessions, yaml.safe_dump(_definition([action])))
    new_policy(sessions)  # on_create: the workflow runs the action for real
    process(sessions, settings)
    failure = f"action 0 ({action['type']}) failed: {reason}"
    assert _execution_error(sessions) == f"{failure} (not retryable)"


@pytest.mark.parametrize("secret_env", [None, "HOOK_KEY"])
def test_the_missing_key_is_the_reason_a_delivery_attempt_fails_with(
    sessions: sessionmaker[Session],
    db_url: str,
    people: dict[str, int],
    monkeypatch: pytest.MonkeyPatch,
    secret_env: str | None,
) -> None:
    monkeypatch.delenv("HOOK_KEY", raising=False)
    settings = make_settings(db_url, GOV_PIPELINE_WEBHOOK_SECRET="")
    action = {"type": "webhook", "url": "http://127.0.0.1:8765/x", "secret_env": secret_env}
    (reason,) = _report(sessions, settings, [action], people["owned"])["actions"][0]["would_fail"]
    attempt = send_once(WebhookDelivery(url=action["url"], secret_env=secret_env), settings)
    assert not attempt.ok and attempt.error == reason


# -- the command line --------------------------------------------------------------------

DOC = ROOT / "docs" / "workflows.md"


def _documented_example() -> tuple[str, str]:
    """The YAML and the output of the example in the dry-run section of workflows.md."""
    section = DOC.read_text().split("\n### Dry-run\n", 1)[1].split("\n## ", 1)[0]
    (pair,) = re.findall(r"```yaml\n(.*?)```\n(?:[^\n]*\n)*?```text\n(.*?)```", section, flags=re.S)
    return pair[0], pair[1]


@pytest.fixture
def run(db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    """The CLI against a tenant acme whose only user is carol (compliance officer), where
    webhooks may call hooks.example.com and no GOV_PIPELINE_WEBHOOK_SECRET is set."""
    COMPILED.clear()
    monkeypatch.setenv("GOV_PIPELINE_DATABASE_URL", db_url)
    monkeypatch.setenv("GOV_PIPELINE_TENANT", TENANT)
    monkeypatch.setenv("GOV_PIPELINE_WEBHOOK_ALLOWED_HOSTS", "hooks.example.com")
    monkeypatch.delenv("GOV_PIPELINE_WEBHOOK_SECRET", raising=False)
    invoke = cli_invoker(capsys)
    assert invoke("tenants", "create", TENANT)[0] == 0
    assert invoke("users", "create", "carol", "--role", "compliance_officer")[0] == 0
    return invoke


def test_the_command_line_prints_what_the_docs_show(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    source, documented = _documented_example()
    path = tmp_path / "review.yaml"
    path.write_text(source)
    code, out, _ = run("policies", "create", "--title", "A", "--type", "Privacy", "--json")
    assert code == 0 and json.loads(out)["id"] == 1 and json.loads(out)["owner_id"] is None
    code, out, err = run("workflows", "dry-run", str(path), "--entity", "1")
    assert (code, err) == (0, "")  # a report: actions that would fail are no error
    assert out == documented

    code, out, _ = run("workflows", "dry-run", str(path), "--entity", "1", "--json")
    (report,) = json.loads(out)
    assert code == 0 and report["would_run"] is True
    failing = {e["step"]: e["would_fail"] for e in report["actions"] if "would_fail" in e}
    assert failing["1"] == ["user 'ghost' not found in tenant 'acme'", "policy 1 has no owner"]
    (approved,) = report["actions"][-1]["on_approved"]
    assert approved["step"] == "on_approved.0" and approved["check"] == "would fail"
    texts = [line for line in documented.splitlines() if "would fail: " in line]
    shown = [r for e in report["actions"] for r in e.get("would_fail", [])]
    assert len(texts) == len(shown) + len(approved["would_fail"])  # the same reasons, every one
