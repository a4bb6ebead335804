"""Security end to end on both databases: webhooks only to allow-listed hosts and verified by
the receiver, approvals decided only by their listed approvers, and no read path (service or
CLI) that returns another tenant's data."""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import time
import urllib.error
import urllib.request
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

import gov_pipeline.cli
import gov_pipeline.engine
import gov_pipeline.runners
import gov_pipeline.services
from gov_pipeline.cli.app import cli
from gov_pipeline.db.models import (
    Approval,
    EntityChange,
    Policy,
    Task,
    WebhookDelivery,
    Workflow,
    WorkflowExecution,
    row_to_dict,
)
from gov_pipeline.domain import webhooks as signing
from gov_pipeline.domain.definitions import parse_definition
from gov_pipeline.domain.errors import (
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
)
from gov_pipeline.engine import dry_run as preview
from gov_pipeline.runners.deliveries import send_once
from gov_pipeline.runners.operations import failed_execution_ids
from gov_pipeline.services import (
    approvals,
    entities,
    executions,
    notifications,
    policies,
    records,
    skips,
    tenants,
    workflows,
)
from gov_pipeline.services.tenants import upsert_user
from gov_pipeline_tests.integration.engine_support import (
    apply_yaml,
    cli_invoker,
    count,
    make_settings,
    move,
    new_policy,
    process,
    start_example_approval,
    webhook_server,
)

HOOK = """
name: hook
tenant_id: acme
type: notification
trigger: on_status_change
owner_id: wanda
conditions: {field: new.status, op: changed_to, value: in_review}
actions: [{type: webhook, url: "URL", max_attempts: 2}]
"""

# -- webhooks ----------------------------------------------------------------------------------


def _executions(sessions: sessionmaker[Session]) -> list[WorkflowExecution]:
    with sessions.begin() as session:
        return list(session.scalars(select(WorkflowExecution).order_by(WorkflowExecution.id)))


def test_a_webhook_to_a_host_off_the_allow_list_sends_no_request(
    sessions: sessionmaker[Session], tenant: str, db_url: str
) -> None:
    # The receiver runs on 127.0.0.1, which this configuration does not allow.
    settings = make_settings(db_url, GOV_PIPELINE_WEBHOOK_ALLOWED_HOSTS="hooks.example.com")
    with webhook_server([200]) as (url, received):
        apply_yaml(sessions, HOOK.replace("URL", url))
        move(sessions, new_policy(sessions), "in_review")
        process(sessions, settings)
    assert received.requests == 0
    (execution,) = _executions(sessions)
    assert execution.status == "failed"
    port = urlsplit(url).port
    assert f"host '127.0.0.1:{port}' is not allow-listed (allowed: hooks.example.com" in (
        execution.error or ""
    )
    assert count(sessions, WebhookDelivery) == 0


def test_a_queued_delivery_whose_host_left_the_allow_list_is_not_sent(
    sessions: sessionmaker[Session], tenant: str, db_url: str
) -> None:
    """The host is checked again at send time: an allow-list narrowed after the delivery was
    queued stops it."""
    with webhook_server([200]) as (url, received):
        delivery = WebhookDelivery(
            id=1, tenant_id="acme", execution_id=1, url=url, payload={"version": 1},
            timeout_seconds=2.0, max_attempts=1,
        )  # fmt: skip
        port = urlsplit(url).port
        for narrowed in ("localhost", f"127.0.0.1:{port + 1}", f"localhost:{port}"):
            settings = make_settings(db_url, GOV_PIPELINE_WEBHOOK_ALLOWED_HOSTS=narrowed)
            refused = send_once(delivery, settings)
            assert not refused.ok and "not allow-listed" in (refused.error or "")
        assert received.requests == 0
        for allowing in ("127.0.0.1", f"127.0.0.1:{port}"):
            settings = make_settings(db_url, GOV_PIPELINE_WEBHOOK_ALLOWED_HOSTS=allowing)
            assert send_once(delivery, settings).ok
        assert received.requests == 2 and received.bad_signatures == 0


def test_the_receiver_rejects_a_wrong_key_and_a_tampered_request(
    sessions: sessionmaker[Session], tenant: str, db_url: str
) -> None:
    settings = make_settings(db_url, GOV_PIPELINE_WEBHOOK_SECRET="not-the-receivers-key")
    with webhook_server([200], secret="receivers-key") as (url, received):
        apply_yaml(sessions, HOOK.replace("URL", url))
        move(sessions, new_policy(sessions), "in_review")
        process(sessions, settings)
        # Signed with the wrong key: refused on both attempts, the execution fails.
        assert (received.requests, received.bad_signatures, received.bodies) == (2, 2, [])
        (delivery,) = _all_deliveries(sessions)
        assert (delivery.status, delivery.last_status_code) == ("failed", 401)
        assert _executions(sessions)[0].status == "failed"

        # Correctly signed, then tampered with in transit: body, timestamp, signature.
        body = json.dumps({"version": 1, "tenant_id": "acme"}).encode()
        stamp = f"{time.time():.3f}"
        good = {
            signing.TIMESTAMP_HEADER: stamp,
            signing.SIGNATURE_HEADER: signing.sign("receivers-key", stamp, body),
        }
        assert _post(url, body, good) == 200
        tampered = [
            (body.replace(b"acme", b"evil"), good),
            (body, {**good, signing.TIMESTAMP_HEADER: f"{float(stamp) + 1:.3f}"}),
            (body, {**good, signing.SIGNATURE_HEADER: _flip_last(good[signing.SIGNATURE_HEADER])}),
            (body, {signing.TIMESTAMP_HEADER: stamp}),
            (body, {**good, signing.SIGNATURE_HEADER: "sha1=" + "0" * 40}),
        ]
        for sent_body, headers in tampered:
            assert _post(url, sent_body, headers) == 401
        assert received.bad_signatures == 2 + len(tampered)
        assert received.bodies == [{"version": 1, "tenant_id": "acme"}]


def _flip_last(signature: str) -> str:
    """The signature with its last hex digit changed (to another digit, always)."""
    return signature[:-1] + ("1" if signature.endswith("0") else "0")


def _all_deliveries(sessions: sessionmaker[Session]) -> list[WebhookDelivery]:
    with sessions.begin() as session:
        return list(session.scalars(select(WebhookDelivery)))


def _post(url: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


# -- approvals -----------------------------------------------------------------------------------


def _decision_rows(sessions: sessionmaker[Session]) -> tuple[list[tuple[Any, ...]], int]:
    with sessions.begin() as session:
        steps = [
            (a.id, a.status, a.decided_by, a.comment)
            for a in session.scalars(select(Approval).order_by(Approval.id))
        ]
    return steps, count(sessions, EntityChange)


def test_only_a_listed_approver_of_the_tenant_may_decide_once(
    sessions: sessionmaker[Session], tenant: str, db_url: str
) -> None:
    settings = make_settings(db_url)
    # carol is acme's compliance officer (step 1); gail is one in globex, and globex's carol is
    # a viewer: holding the role (or the user id) in another tenant does not count.
    start_example_approval(
        sessions, settings,
        (("globex", "gail", "compliance_officer"), ("globex", "carol", "viewer"),
         ("acme", "mallory", "viewer")),
    )  # fmt: skip
    with sessions.begin() as session:
        first = session.scalars(select(Approval).order_by(Approval.step_index)).first()
        assert first is not None and first.status == "pending"
        step = first.id
    before = _decision_rows(sessions)

    def decide(tenant_id: str, user: str, decision: str = "approve") -> None:
        with sessions.begin() as session:
            approvals.decide(
                session, tenant_id=tenant_id, approval_id=step, user_id=user,
                decision=decision, comment="attempt",
            )  # fmt: skip

    refusals = [
        ("acme", "mallory", PermissionDeniedError),  # not an approver
        ("acme", "gail", PermissionDeniedError),  # an approver's role, in another tenant
        ("acme", "ciso", PermissionDeniedError),  # an approver, of another step
        ("globex", "gail", NotFoundError),  # the approval seen from another tenant
        ("globex", "carol", NotFoundError),
    ]
    for tenant_id, user, error in refusals:
        with pytest.raises(error):
            decide(tenant_id, user)
        assert _decision_rows(sessions) == before, (tenant_id, user)

    decide("acme", "carol")
    after = _decision_rows(sessions)
    assert after[1] == before[1] + 1
    for decision in ("approve", "reject", "request_changes"):
        with pytest.raises(ConflictError, match="already approved"):
            decide("acme", "carol", decision)
    assert _decision_rows(sessions) == after


# -- tenant isolation of every read path --------------------------------------------------------

EVERYTHING = """
name: MARK everything
tenant_id: TENANT
type: approval
trigger: on_status_change
owner_id: MARK-owner
conditions: {field: new.status, op: changed_to, value: in_review}
actions:
  - {type: notify, users: [MARK-reader], title: "MARK notice {entity.title}"}
  - {type: create_task, title: "MARK task", assignee: owner}
  - {type: webhook, url: "URL"}
  - {type: request_approval, steps: [{name: MARK step, approvers: {users: [MARK-approver]}}]}
"""


def _populate(sessions: sessionmaker[Session], settings: Any, url: str) -> dict[str, int]:
    """For each tenant: a user, a workflow, a policy in review with an execution, approval,
    notification, task and webhook delivery; every text carries the tenant's mark."""
    ids: dict[str, int] = {}
    for tenant_id, mark in (("acme", "ACME"), ("globex", "GLOBEX")):
        with sessions.begin() as session:
            upsert_user(session, tenant_id=tenant_id, user_id=f"{mark}-approver", name=mark)
        text = EVERYTHING.replace("MARK", mark).replace("TENANT", tenant_id)
        apply_yaml(sessions, text.replace("URL", url))
        pid = new_policy(
            sessions, tenant=tenant_id, title=f"{mark} policy", owner_id=f"{mark}-owner"
        )
        move(sessions, pid, "in_review", tenant=tenant_id)
        ids[mark] = pid
    process(sessions, settings)
    return ids


def _ids(sessions: sessionmaker[Session], model: Any, tenant_id: str) -> int:
    with sessions.begin() as session:
        return int(session.scalars(select(model.id).where(model.tenant_id == tenant_id)).one())


def _dump(value: Any) -> str:
    def plain(obj: Any) -> Any:
        if hasattr(obj, "__table__"):
            return row_to_dict(obj)
        if isinstance(obj, workflows.LoadedWorkflow):
            return {"name": obj.name, "definition": obj.definition.model_dump(mode="json")}
        if is_dataclass(obj) and not isinstance(obj, type):
            return asdict(obj)
        if isinstance(obj, set | frozenset | tuple):
            return list(obj)
        return str(obj)

    return json.dumps(value, default=plain, sort_keys=True)


# Every public service function with a `tenant_id` parameter, by what it does. A new one
# fails test_every_tenant_scoped_service_function_is_classified until it is listed here (and,
# when it reads, called in test_no_service_read_path_returns_another_tenants_data).
SERVICE_READS = {
    "audit.read_page", "audit.stream_rows", "compliance.read_facts", "emails.list_emails",
    "approvals.get_approval", "approvals.list_approvals", "entities.load_entity",
    "executions.describe_execution", "executions.get_execution", "executions.list_executions",
    "notifications.list_notifications", "notifications.resolve_recipients",
    "policies.get_policy", "policies.list_policies", "records.get_record",
    "records.list_records", "skips.list_skips", "tenants.list_users",
    "tenants.require_tenant", "tenants.roles_of", "tenants.user_activity",
    "tenants.users_with_roles", "workflows.active_workflows", "workflows.get_workflow", "workflows.list_workflows",
}  # fmt: skip
SERVICE_WRITES = {
    "approvals.decide", "executions.retry_execution", "importer.import_records",
    "manual.run_manual_workflow", "manual.start_manual_execution", "notifications.send",
    "policies.create_policy", "policies.soft_delete_policy", "policies.transition_status",
    "policies.update_policy", "records.create_record", "records.soft_delete_record",
    "records.transition_record", "records.update_record", "tenants.create_tenant",
    "tenants.upsert_user", "approvals.delegate", "emails.resend_emails", "reviews.complete_review",
    "operations.complete_review",
    # Runners over a sessionmaker whose reads are scoped by the tenant they are given;
    # test_audit_export and test_compliance_report check that another tenant's rows are absent.
    "audit_export.export_audit", "compliance.read_compliance_report",
    "executions.cancel_execution", "operations.cancel_execution",
    "operations.decide_and_continue", "operations.retry_executions",
}  # fmt: skip
# Reads that return ids only (no marks to look for): checked against the tenant's own rows.
ID_READS = {"operations.failed_execution_ids"}


def _tenant_scoped_service_functions() -> set[str]:
    found = set()
    packages = (gov_pipeline.services, gov_pipeline.engine, gov_pipeline.runners)
    for package, info in ((p, i) for p in packages for i in pkgutil.iter_modules(p.__path__)):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for name, function in inspect.getmembers(module, inspect.isfunction):
            if function.__module__ != module.__name__ or name.startswith("_"):
                continue
            if "tenant_id" in inspect.signature(function).parameters:
                found.add(f"{info.name}.{name}")
    return found


def test_every_tenant_scoped_service_function_is_classified() -> None:
    assert _tenant_scoped_service_functions() == SERVICE_READS | SERVICE_WRITES | ID_READS
    assert not SERVICE_READS & SERVICE_WRITES


def _export_and_report_reads(s: Session, tenant_id: str) -> dict[str, Any]:
    """What the audit export and the compliance report read for `tenant_id`."""
    from datetime import date

    from gov_pipeline.domain.audit import Period
    from gov_pipeline.services import audit, compliance, emails

    period = Period.parse("2000-01-01", "2100-01-01")
    return {
        f"audit.{name}({kind.name})": read
        for kind in audit.KINDS
        for name, read in (
            ("stream_rows", list(audit.stream_rows(
                s, kind, tenant_id=tenant_id, period=period, page_size=100))),
            ("read_page", audit.read_page(
                s, kind, tenant_id=tenant_id, period=period, after_id=0, limit=1000)),
        )
    } | {
        "compliance.read_facts": compliance.read_facts(s, tenant_id=tenant_id, today=date.today()),
        "emails.list_emails": emails.list_emails(s, tenant_id),
    }  # fmt: skip


def test_no_service_read_path_returns_another_tenants_data(
    sessions: sessionmaker[Session], tenant: str, db_url: str
) -> None:
    settings = make_settings(db_url)
    with webhook_server([200]) as (url, _):
        pids = _populate(sessions, settings, url)
    mine, theirs = pids["ACME"], pids["GLOBEX"]
    their_execution = _ids(sessions, WorkflowExecution, "globex")
    their_approval = _ids(sessions, Approval, "globex")
    their_workflow = _ids(sessions, Workflow, "globex")
    my_execution = _ids(sessions, WorkflowExecution, "acme")
    my_approval = _ids(sessions, Approval, "acme")
    assert count(sessions, Task) == 2 and count(sessions, WebhookDelivery) == 2

    def reads(
        tenant_id: str, mark: str, policy: int, execution: int, approval: int
    ) -> dict[str, Any]:
        task = _ids(sessions, Task, tenant_id)
        """Each read path, asked as `tenant_id` about that tenant's own rows."""
        with sessions.begin() as s:
            return {
                "approvals.get_approval": approvals.get_approval(s, tenant_id, approval),
                "approvals.list_approvals": approvals.list_approvals(s, tenant_id),
                "approvals.list_approvals(user)": approvals.list_approvals(
                    s, tenant_id, user_id=f"{mark}-approver"
                ),
                "entities.load_entity": entities.load_entity(s, tenant_id, "policy", str(policy)),
                "executions.describe_execution": executions.describe_execution(
                    s, tenant_id, execution
                ),
                "executions.get_execution": executions.get_execution(s, tenant_id, execution),
                "executions.list_executions": executions.list_executions(s, tenant_id),
                "skips.list_skips": skips.list_skips(s, tenant_id),
                "notifications.list_notifications": notifications.list_notifications(s, tenant_id),
                "notifications.resolve_recipients": notifications.resolve_recipients(
                    s, tenant_id, roles=["admin", "viewer", "policy_owner"]
                ),
                "policies.get_policy": policies.get_policy(
                    s, tenant_id=tenant_id, policy_id=policy
                ),
                "policies.list_policies": policies.list_policies(s, tenant_id=tenant_id),
                "records.get_record": records.get_record(
                    s, "task", tenant_id=tenant_id, record_id=task
                ),
                "records.list_records": records.list_records(s, "task", tenant_id=tenant_id),
                "tenants.list_users": tenants.list_users(s, tenant_id),
                "tenants.require_tenant": tenants.require_tenant(s, tenant_id),
                "tenants.roles_of": tenants.roles_of(s, tenant_id, f"{mark}-approver"),
                "tenants.user_activity": tenants.user_activity(
                    s, tenant_id, ["ACME-approver", "GLOBEX-approver"]
                ),
                "tenants.users_with_roles": tenants.users_with_roles(
                    s, tenant_id, ["admin", "viewer"]
                ),
                "workflows.active_workflows": workflows.active_workflows(
                    s, tenant_id, "policy", ["on_status_change"]
                ),
                "workflows.get_workflow": workflows.get_workflow(
                    s, tenant_id, f"{mark} everything"
                ),
                "workflows.list_workflows": workflows.list_workflows(s, tenant_id),
                **_export_and_report_reads(s, tenant_id),
                "dry_run.dry_run": preview.dry_run(
                    s,
                    parse_definition(apply_ready(EVERYTHING, mark, tenant_id)),
                    entity_id=policy,
                    settings=settings,
                ),
            }

    acme = reads("acme", "ACME", mine, my_execution, my_approval)
    assert {name.split("(")[0] for name in acme} == SERVICE_READS | {"dry_run.dry_run"}
    globex = reads("globex", "GLOBEX", theirs, their_execution, their_approval)
    for name, result in acme.items():
        assert "GLOBEX" not in _dump(result), name
    # The check can fail: the same paths do return the other tenant's marks to that tenant.
    shown = [name for name, result in globex.items() if "GLOBEX" in _dump(result)]
    assert len(shown) >= 12, shown

    # The failed executions a retry of the tenant would take: its own only.
    failed = _ids(sessions, WorkflowExecution, "globex")
    with sessions.begin() as s:
        s.execute(update(WorkflowExecution).values(status="failed"))
    assert set(failed_execution_ids(sessions, "acme", None, 50)) == {my_execution}
    assert set(failed_execution_ids(sessions, "globex", None, 50)) == {failed}

    # Asked by id for the other tenant's rows: not found, never their data.
    with sessions.begin() as s:
        for call in (
            lambda: policies.get_policy(s, tenant_id="acme", policy_id=theirs),
            lambda: executions.get_execution(s, "acme", their_execution),
            lambda: executions.describe_execution(s, "acme", their_execution),
            lambda: approvals.get_approval(s, "acme", their_approval),
            lambda: workflows.get_workflow(s, "acme", their_workflow),
            lambda: preview.dry_run(
                s,
                parse_definition(apply_ready(EVERYTHING, "ACME", "acme")),
                entity_id=theirs,
                settings=settings,
            ),
            lambda: executions.retry_execution(s, "acme", their_execution),
        ):
            with pytest.raises(NotFoundError) as err:
                call()
            assert "GLOBEX" not in str(err.value)
        assert entities.load_entity(s, "acme", "policy", str(theirs)) is None
        with pytest.raises(NotFoundError, match="not found in tenant 'acme'"):
            workflows.get_workflow(s, "acme", "GLOBEX everything")  # by name: echoes the name


def apply_ready(template: str, mark: str, tenant_id: str) -> dict[str, Any]:
    import yaml

    text = template.replace("MARK", mark).replace("TENANT", tenant_id)
    data: dict[str, Any] = yaml.safe_load(text.replace("URL", "http://127.0.0.1:9/x"))
    return data


# The CLI commands that take a tenant, by what they do; the read ones are run as acme below.
def _tenant_commands() -> set[str]:
    for info in pkgutil.iter_modules(gov_pipeline.cli.__path__):
        importlib.import_module(f"gov_pipeline.cli.{info.name}")
    found = set()

    def walk(group: click.Group, path: str) -> None:
        for name, command in group.commands.items():
            if isinstance(command, click.Group):
                walk(command, f"{path}{name} ")
            elif any(p.name == "tenant" for p in command.params):
                found.add(f"{path}{name}")

    walk(cli, "")
    return found


CLI_WRITES = {
    "approvals approve", "approvals reject", "approvals request-changes", "executions retry",
    "executions cancel", "users create", "approvals delegate", "notifications resend-emails",
    *(f"{group} complete-review" for group in ("policies", "risks", "sops")),
    # Reads whose tenant scoping test_audit_export, test_compliance_report and test_email
    # check (their output is files, figures or an empty outbox, not the tenant's marks).
    "audit export", "report compliance", "notifications emails",
    *(f"{group} {command}" for group in ("policies", "risks", "requirements", "tasks", "sops",
                                        "exceptions")
      for command in ("create", "delete", "import", "set-status", "update")),
}  # fmt: skip


# One record of each other entity type per tenant, with the tenant's mark in its title.
OTHER_RECORDS = {
    "risks": ("risk", {"category": "operational"}),
    "requirements": ("compliance_requirement", {"framework": "ISO 27001"}),
    "sops": ("sop", {"process_area": "HR"}),
    "exceptions": ("policy_exception", {}),
}


def _other_records(
    sessions: sessionmaker[Session], tenant_id: str, mark: str, pid: int
) -> dict[str, int]:
    """Create OTHER_RECORDS in `tenant_id` (an exception of its policy `pid`); their ids."""
    ids: dict[str, int] = {}
    with sessions.begin() as session:
        for group, (entity_type, fields) in OTHER_RECORDS.items():
            extra = {"policy_id": pid} if entity_type == "policy_exception" else {}
            record = records.create_record(
                session, entity_type, tenant_id=tenant_id,
                fields={"title": f"{mark} {group}", **fields, **extra},
            )  # fmt: skip
            ids[group] = record.id
        ids["tasks"] = int(
            session.scalars(select(Task.id).where(Task.tenant_id == tenant_id)).one()
        )
    return ids


def cli_reads(
    pid: int, execution: int, workflow_file: Path, others: dict[str, int]
) -> dict[str, list[str]]:
    return {
        "approvals list": ["approvals", "list", "-t", "acme", "--json"],
        "executions list": ["executions", "list", "-t", "acme", "--json"],
        "executions show": ["executions", "show", str(execution), "-t", "acme", "--json"],
        "notifications list": ["notifications", "list", "-t", "acme", "--json"],
        "policies list": ["policies", "list", "-t", "acme", "--json"],
        "policies show": ["policies", "show", str(pid), "-t", "acme", "--json"],
        "tasks list": ["tasks", "list", "-t", "acme", "--json"],
        **{
            f"{group} {command}": [group, command, *args, "-t", "acme", "--json"]
            for group, record_id in others.items()
            for command, args in (("list", []), ("show", [str(record_id)]))
        },
        "users list": ["users", "list", "-t", "acme", "--json"],
        "workflows list": ["workflows", "list", "-t", "acme", "--json"],
        "verify": ["verify", "-t", "acme", "--no-dagster", "--json"],
        # dry-run takes its tenant from the file: an acme definition on a policy id.
        "workflows dry-run": ["workflows", "dry-run", str(workflow_file), "--policy", str(pid)],
    }


def test_no_cli_read_command_prints_another_tenants_data(
    sessions: sessionmaker[Session],
    tenant: str,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    settings = make_settings(db_url)
    with webhook_server([200]) as (url, _):
        pids = _populate(sessions, settings, url)
    monkeypatch.setenv("GOV_PIPELINE_DATABASE_URL", db_url)
    monkeypatch.delenv("GOV_PIPELINE_TENANT", raising=False)
    run = cli_invoker(capsys)
    workflow_file = tmp_path / "acme.json"
    workflow_file.write_text(json.dumps(apply_ready(EVERYTHING, "ACME", "acme")))

    acme = _other_records(sessions, "acme", "ACME", pids["ACME"])
    globex = _other_records(sessions, "globex", "GLOBEX", pids["GLOBEX"])
    mine = cli_reads(pids["ACME"], _ids(sessions, WorkflowExecution, "acme"), workflow_file, acme)
    assert set(mine) | CLI_WRITES >= _tenant_commands() | {"workflows dry-run"}
    for name, args in mine.items():
        code, out, err = run(*args)
        assert code in (0, 1) and "Traceback" not in err, (name, err)
        assert "GLOBEX" not in out + err, name
        if name != "verify":
            assert code == 0 and "ACME" in out, (name, out, err)

    # The other tenant's ids, asked as acme: not found (exit 1), nothing of theirs printed.
    theirs = cli_reads(
        pids["GLOBEX"], _ids(sessions, WorkflowExecution, "globex"), workflow_file, globex
    )
    for name in ("policies show", "executions show", "workflows dry-run", "risks show",
                 "requirements show", "tasks show", "sops show", "exceptions show"):  # fmt: skip
        code, out, err = run(*theirs[name])
        assert code == 1 and "not found" in err and "GLOBEX" not in out + err, name
    code, out, err = run("approvals", "approve", str(_ids(sessions, Approval, "globex")),
                         "-t", "acme", "--user", "GLOBEX-approver")  # fmt: skip
    assert code == 1 and "not found" in err
    with sessions.begin() as session:
        assert session.scalars(select(Approval.status)).all() == ["pending", "pending"]
        assert {p.title for p in session.scalars(select(Policy))} == {
            "ACME policy",
            "GLOBEX policy",
        }
