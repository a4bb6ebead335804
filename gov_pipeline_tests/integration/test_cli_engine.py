"""The engine's commands: workflows, process --sync, approvals, executions; and the demo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gov_pipeline.services.workflows import COMPILED
from gov_pipeline_tests.integration.engine_support import cli_invoker

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(str(p) for p in (ROOT / "examples/workflows").glob("*.yaml"))


@pytest.fixture
def run(db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    COMPILED.clear()
    monkeypatch.setenv("GOV_PIPELINE_DATABASE_URL", db_url)
    monkeypatch.setenv("GOV_PIPELINE_TENANT", "acme")

    invoke = cli_invoker(capsys)

    assert invoke("tenants", "create", "acme")[0] == 0
    for user, role in (
        ("carol", "compliance_officer"),
        ("ciso", "admin"),
        ("olivia", "policy_owner"),
    ):
        assert invoke("users", "create", user, "--role", role)[0] == 0
    return invoke


def test_validate_lists_every_problem_and_apply_stores_nothing_on_error(
    run, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: x\ntenant_id: acme\ntype: bogus\ntrigger: on_create\n"
        "conditions: {field: new.status, op: is, value: 1}\n"
        "actions: [{type: notify, title: t}]\n"
    )
    code, _, err = run("workflows", "validate", *EXAMPLES, str(bad))
    assert code == 1
    assert "bad.yaml: type:" in err and "bad.yaml: conditions.op: unknown operator 'is'" in err
    assert "bad.yaml: actions[0]: notify needs a recipient" in err
    assert err.strip().splitlines()[-1] == "error: 3 problem(s) in 1 file(s); nothing stored"
    assert run("workflows", "apply", *EXAMPLES, str(bad))[0] == 1
    code, out, _ = run("workflows", "list", "--json")
    assert code == 0 and json.loads(out) == []
    code, out, _ = run("workflows", "apply", *EXAMPLES)
    assert code == 0 and out.count("created") == len(EXAMPLES)
    code, out, _ = run("workflows", "apply", *EXAMPLES)
    assert out.count("unchanged") == len(EXAMPLES)


HOOKS = """
name: hooks
tenant_id: acme
type: notification
trigger: on_status_change
actions:
  - {type: notify, include_owner: true, title: t}
  - {type: webhook, url: "http://127.0.0.1:8765/a"}
  - type: request_approval
    steps: [{approvers: {users: [carol]}}]
    on_approved: [{type: webhook, url: "http://127.0.0.1:8765/b", secret_env: HOOK_KEY}]
    on_rejected: [{type: webhook, url: "http://127.0.0.1:8765/c"}]
"""
NO_SECRET = (
    "webhook has no signing secret: set secret_env, GOV_PIPELINE_WEBHOOK_SECRET, or unsigned: true"
)


def test_apply_refuses_a_webhook_that_would_have_no_signing_secret(  # type: ignore[no-untyped-def]
    run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GOV_PIPELINE_WEBHOOK_SECRET", raising=False)
    monkeypatch.delenv("HOOK_KEY", raising=False)  # secret_env: needed where it is sent only
    hooks = tmp_path / "hooks.yaml"
    hooks.write_text(HOOKS)
    assert run("workflows", "validate", str(hooks))[0] == 0  # validation reads no environment
    code, out, err = run("workflows", "apply", *EXAMPLES, str(hooks))
    assert (code, out) == (1, "")
    assert err.strip().splitlines() == [
        f"acme/hooks: actions[1]: {NO_SECRET}",
        f"acme/hooks: actions[2].on_rejected[0]: {NO_SECRET}",
        "error: 2 problem(s); nothing stored",
    ]
    assert json.loads(run("workflows", "list", "--json")[1]) == []  # all or nothing

    # Saying so: unsigned: true. Or a key where it is applied.
    hooks.write_text(HOOKS.replace('/c"}', '/c", unsigned: true}'))
    code, _, err = run("workflows", "apply", str(hooks))
    assert code == 1 and f"actions[1]: {NO_SECRET}" in err and "on_rejected" not in err
    monkeypatch.setenv("GOV_PIPELINE_WEBHOOK_SECRET", "apply-s3cret")
    code, out, _ = run("workflows", "apply", *EXAMPLES, str(hooks))
    assert code == 0 and out.count("created") == len(EXAMPLES) + 1


def test_dry_run_explains_and_writes_nothing(run) -> None:  # type: ignore[no-untyped-def]
    run("workflows", "apply", *EXAMPLES)
    _, out, _ = run(
        "policies", "create", "--title", "A", "--type", "Privacy", "--owner", "olivia", "--json"
    )
    pid = str(json.loads(out)["id"])
    run("policies", "set-status", pid, "in_review")
    code, out, _ = run(
        "workflows",
        "dry-run",
        str(ROOT / "examples/workflows/policy_approval.yaml"),
        "--policy",
        pid,
        "--json",
    )
    (report,) = json.loads(out)
    assert code == 0 and report["would_run"] is True and report["failed_conditions"] == []
    assert [a["type"] for a in report["actions"]] == ["notify", "request_approval"]
    code, out, _ = run(
        "workflows",
        "dry-run",
        str(ROOT / "examples/workflows/publication_notice.yaml"),
        "--policy",
        pid,
    )
    assert "would not run" in out and "failed: new.status changed_to 'published'" in out
    # Nothing was written: no execution exists until the changes are processed.
    assert json.loads(run("executions", "list", "--json")[1]) == []


def test_process_approve_and_inspect_from_the_command_line(run) -> None:  # type: ignore[no-untyped-def]
    run("workflows", "apply", str(ROOT / "examples/workflows/policy_approval.yaml"))
    _, out, _ = run(
        "policies", "create", "--title", "A", "--type", "Privacy", "--owner", "olivia", "--json"
    )
    pid = str(json.loads(out)["id"])
    run("policies", "set-status", pid, "in_review")
    code, out, _ = run("process", "--sync", "--quiet")
    assert code == 0 and out.startswith("processed 2 changes, 1 executions ran")
    _, out, _ = run("approvals", "list", "--user", "carol", "--json")
    (step,) = json.loads(out)
    code, _, err = run("approvals", "approve", str(step["id"]), "--user", "olivia")
    assert code == 1 and "may not decide" in err
    code, _, err = run(
        "approvals", "approve", str(step["id"]), "--user", "carol", "--signature", "{oops"
    )
    assert code == 2 and "--signature: must be JSON" in err
    assert (
        run("approvals", "approve", str(step["id"]), "--user", "carol", "--comment", "ok")[0] == 0
    )
    run("process", "--sync", "--quiet")
    _, out, _ = run("approvals", "list", "--user", "ciso", "--json")
    assert [s["step"] for s in json.loads(out)] == [2]
    _, out, _ = run("executions", "list", "--status", "awaiting_approval", "--json")
    (execution,) = json.loads(out)
    code, out, _ = run("executions", "show", str(execution["id"]))
    assert code == 0 and "decision:" in out and "approval" in out
    code, _, err = run("executions", "retry", str(execution["id"]))
    assert code == 1 and "not failed" in err
    code, _, err = run("process")
    assert code == 2 and "--sync" in err
    code, out, _ = run("notifications", "list", "--user", "ciso", "--json")
    assert [n["type"] for n in json.loads(out)] == ["workflow_approval_required"]


def test_process_follow_keeps_processing_until_sigterm(run, db_url: str) -> None:  # type: ignore[no-untyped-def]
    import signal
    import time

    from gov_pipeline.embedded.processes import bin_path

    run("workflows", "apply", str(ROOT / "examples/workflows/policy_approval.yaml"))
    env = {**os.environ, "GOV_PIPELINE_DATABASE_URL": db_url, "GOV_PIPELINE_TENANT": "acme"}
    follower = subprocess.Popen(
        [bin_path("gov-pipeline"), "process", "--sync", "--follow", "--poll", "0.2"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        _, out, _ = run("policies", "create", "--title", "A", "--type", "Privacy", "--json")
        pid = str(json.loads(out)["id"])
        run("policies", "set-status", pid, "in_review")  # arrives while it follows
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            listed = json.loads(run("executions", "list", "--json")[1])
            if [e["status"] for e in listed] == ["awaiting_approval"]:
                break
            time.sleep(0.2)
        follower.send_signal(signal.SIGTERM)
        out, err = follower.communicate(timeout=60)
    finally:
        if follower.poll() is None:
            follower.kill()
    assert follower.returncode == 0, err
    assert out.startswith("processed 2 changes, 1 executions ran"), (out, err)


def test_a_failed_follow_up_is_retried_from_where_it_failed(run) -> None:  # type: ignore[no-untyped-def]
    """The owner pulls the policy back to draft before the last approval, so the follow-up
    (draft -> approved) is illegal and fails; once the policy is in review again, a retry
    resumes the flow instead of starting it over."""
    run("workflows", "apply", str(ROOT / "examples/workflows/policy_approval.yaml"))
    _, out, _ = run(
        "policies", "create", "--title", "A", "--type", "Privacy", "--owner", "olivia", "--json"
    )
    pid = str(json.loads(out)["id"])
    run("policies", "set-status", pid, "in_review")
    run("process", "--sync", "--quiet")
    (step,) = json.loads(run("approvals", "list", "--status", "pending", "--json")[1])
    run("approvals", "approve", str(step["id"]), "--user", "carol")
    run("process", "--sync", "--quiet")
    run("policies", "set-status", pid, "draft", "--actor", "olivia")
    (step,) = json.loads(run("approvals", "list", "--status", "pending", "--json")[1])
    run("approvals", "approve", str(step["id"]), "--user", "ciso")
    run("process", "--sync", "--quiet", "--retry-delay", "0")
    (failed,) = json.loads(run("executions", "list", "--status", "failed", "--json")[1])
    assert "draft -> approved" in failed["error"]
    run("policies", "set-status", pid, "in_review", "--actor", "olivia")
    code, out, _ = run("executions", "retry", str(failed["id"]))
    assert (
        code == 0
        and out.strip() == f"execution {failed['id']}: retried (continuation), now completed"
    )
    shown = json.loads(run("policies", "show", pid, "--json")[1])
    assert shown["status"] == "approved"
    detail = json.loads(run("executions", "show", str(failed["id"]), "--json")[1])
    keys = [r["step_key"] for r in detail["action_runs"]]
    assert keys.count("review-started") == 1 and keys.count("on_approved.0") == 1
    assert not any(r["status"] == "failed" for r in detail["action_runs"])


def test_the_demo_story_in_sync_mode(tmp_path: Path) -> None:
    """The demo's story processed in process (the Dagster path is the e2e test's)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOV_PIPELINE_")}
    env["GOV_PIPELINE_HOME"] = str(tmp_path / "home")
    done = subprocess.run(
        [sys.executable, "-m", "gov_pipeline.demo", "--sync"], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "1 Access control: published" in out
    assert "2 Data retention: in_review" in out and "3 Cryptography standard: draft" in out
    assert "approvals:     approved 4, changes_requested 1, rejected 1, skipped 2" in out
    assert "executions:    completed 6, skipped 20" in out
    assert "1 delivered to the local receiver, signatures checked (0 bad)" in out
    # The vendor policy's quorum step: escalated, then reassigned to the CISO, who approves.
    assert "overdue 1 h: step 'Compliance quorum' escalated (3 notice(s)" in out
    assert "reassigned to the CISO and escalated" in out and "(quorum 1)" in out
    assert "5 Cloud vendor security: approved" in out
    # Paul's notifications, emailed to the demo's SMTP receiver.
    assert "received: to paul@acme.example, subject 'Vendor policy approved'" in out
    assert "emails:        4 received by the local SMTP receiver" in out
    assert "log: WARNING" not in out + done.stderr


def test_policies_import_with_progress_and_all_or_nothing(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    good = tmp_path / "good.csv"
    good.write_text(
        "title,policy_type,owner_id\n" + "".join(f"P{i},Security,olivia\n" for i in range(120))
    )
    code, out, _ = run("policies", "import", str(good), "--chunk-size", "50")
    assert code == 0 and "imported 120 policies" in out and "in 3 chunk(s)" in out
    bad = tmp_path / "bad.csv"
    bad.write_text("title,policy_type\nok,Security\n,Security\nX,\n")
    code, _, err = run("policies", "import", str(bad))
    assert (
        code == 2
        and "2 invalid row(s): row 2: title: is required; row 3: policy_type: is required" in err
    )
    assert json.loads(run("policies", "list", "--json", "--limit", "1")[1])["total"] == 120


def _publish_a_policy(run, title: str = "A") -> str:  # type: ignore[no-untyped-def]
    _, out, _ = run("policies", "create", "--title", title, "--type", "Privacy", "--json")
    pid = str(json.loads(out)["id"])
    for status in ("in_review", "approved", "published"):
        assert run("policies", "set-status", pid, status)[0] == 0
    return pid


def _publication_notice(tmp_path: Path, url: str, max_attempts: int = 10) -> str:
    """The example publication notice, sending to `url` (a receiver of the test's own)."""
    text = (ROOT / "examples/workflows/publication_notice.yaml").read_text()
    text = text.replace("http://127.0.0.1:8765/policy-events", url)
    text = text.replace("max_attempts: 10", f"max_attempts: {max_attempts}")
    path = tmp_path / "publication_notice.yaml"
    path.write_text(text)
    return str(path)


def test_process_and_retry_exit_1_naming_each_execution_that_failed(  # type: ignore[no-untyped-def]
    run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gov_pipeline.embedded.webhook_receiver import webhook_receiver

    monkeypatch.setenv("GOV_PIPELINE_WEBHOOK_SECRET", "cli-s3cret")
    monkeypatch.setenv("GOV_PIPELINE_WEBHOOK_ALLOWED_HOSTS", "hooks.example.org")
    with webhook_receiver("cli-s3cret") as (url, received):
        assert run("workflows", "apply", _publication_notice(tmp_path, url))[0] == 0
        first, second = _publish_a_policy(run, "A"), _publish_a_policy(run, "B")
        code, out, err = run("process", "--sync", "--quiet")
        assert code == 1 and out.startswith(
            "processed 8 changes, 0 executions ran, 2 failed, in"
        ), err
        failed = json.loads(run("executions", "list", "--status", "failed", "--json")[1])
        ids = sorted(e["id"] for e in failed)
        port = url.split(":")[2].split("/")[0]
        reason = (
            f"action 1 (webhook) failed: url: host '127.0.0.1:{port}' is not allow-listed "
            "(allowed: hooks.example.org; add it to GOV_PIPELINE_WEBHOOK_ALLOWED_HOSTS) "
            "(not retryable)"
        )
        assert err.strip().splitlines() == [
            f"execution {ids[0]} (Publication notice on policy {first}, tenant acme) failed: "
            + reason,
            f"execution {ids[1]} (Publication notice on policy {second}, tenant acme) failed: "
            + reason,
            f"error: 2 execution(s) failed: {ids[0]}, {ids[1]} (retry with: gov-pipeline "
            "executions retry ID --tenant TENANT)",
        ]
        # The list shows the whole reason, wrapped in its column (--json is unchanged).
        code, out, _ = run("executions", "list", "--status", "failed")
        assert code == 0 and "…" not in out
        header, *lines = out.splitlines()
        column = header.index("WHY")
        assert all(len(line) <= column + 60 for line in lines)
        first_row = [line[column:] for line in lines[: len(lines) // 2]]
        assert " ".join(first_row) == reason
        assert {e["error"] for e in failed} == {reason}

        # Still not allowed: the retry fails again, and says why.
        code, out, err = run("executions", "retry", str(ids[0]))
        assert (code, out.strip()) == (1, f"execution {ids[0]}: retried (pending), now failed")
        assert err.strip() == f"error: execution {ids[0]} failed again: {reason}"
        # Allowed, with the receiver up: the retry succeeds.
        monkeypatch.setenv("GOV_PIPELINE_WEBHOOK_ALLOWED_HOSTS", "127.0.0.1")
        code, out, err = run("executions", "retry", str(ids[0]))
        assert (code, out.strip(), err) == (
            0, f"execution {ids[0]}: retried (pending), now completed", "",
        )  # fmt: skip
        assert [b["execution_id"] for b in received.bodies] == [ids[0]]
        assert received.bad_signatures == 0
        # Nothing new failed: process --sync exits 0 again.
        code, out, err = run("process", "--sync", "--quiet")
        assert (code, err) == (0, "") and out.startswith("processed 0 changes")


def test_a_webhook_delivery_that_fails_for_good_is_reported_by_process_and_retry(  # type: ignore[no-untyped-def]
    run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gov_pipeline.embedded.webhook_receiver import webhook_receiver

    monkeypatch.setenv("GOV_PIPELINE_WEBHOOK_SECRET", "cli-s3cret")
    monkeypatch.setenv("GOV_PIPELINE_WEBHOOK_ALLOWED_HOSTS", "127.0.0.1")
    monkeypatch.setenv("GOV_PIPELINE_WEBHOOK_RETRY_DELAY", "0.01")
    # Two attempts per delivery: the first delivery and the first retry get HTTP 500.
    with webhook_receiver("cli-s3cret", (500, 500, 500, 500, 204)) as (url, received):
        run("workflows", "apply", _publication_notice(tmp_path, url, max_attempts=2))
        pid = _publish_a_policy(run)
        code, out, err = run("process", "--sync", "--quiet")
        (failed,) = json.loads(run("executions", "list", "--status", "failed", "--json")[1])
        eid = failed["id"]
        reason = f"webhook to {url} failed after 2 attempts: HTTP 500"
        assert code == 1 and out.startswith(
            "processed 4 changes, 1 executions ran, 1 failed, in"
        ), err
        assert err.strip().splitlines() == [
            f"execution {eid} (Publication notice on policy {pid}, tenant acme) failed: {reason}",
            f"error: 1 execution(s) failed: {eid} (retry with: gov-pipeline executions retry "
            "ID --tenant TENANT)",
        ]
        code, out, err = run("executions", "retry", str(eid))
        assert (code, out.strip()) == (1, f"execution {eid}: retried (deliveries), now failed")
        assert err.strip() == f"error: execution {eid} failed again: {reason}"
        code, out, err = run("executions", "retry", str(eid))
        assert (code, out.strip(), err) == (
            0, f"execution {eid}: retried (deliveries), now completed", "",
        )  # fmt: skip
        assert received.requests == 5 and len(received.bodies) == 1


def test_cancel_from_the_command_line(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    run("workflows", "apply", str(ROOT / "examples/workflows/policy_approval.yaml"))
    _, out, _ = run("policies", "create", "--title", "A", "--type", "Privacy", "--json")
    pid = str(json.loads(out)["id"])
    run("policies", "set-status", pid, "in_review")
    run("process", "--sync", "--quiet")
    (waiting,) = json.loads(run("executions", "list", "--status", "awaiting_approval", "--json")[1])
    steps = sorted(s["id"] for s in json.loads(run("approvals", "list", "--json")[1]))

    code, out, err = run(
        "executions", "cancel", str(waiting["id"]), "--actor", "carol", "--reason", "superseded"
    )
    assert (code, err) == (0, "")
    assert out.strip() == (
        f"execution {waiting['id']}: cancelled (was awaiting_approval); "
        f"withdrew approval {steps[0]}, {steps[1]}"
    )
    code, out, _ = run("executions", "list", "--status", "cancelled")
    assert "cancelled by carol: superseded" in out
    listed = json.loads(run("approvals", "list", "--json")[1])
    assert [s["status"] for s in listed] == ["withdrawn", "withdrawn"]
    assert json.loads(run("approvals", "list", "--user", "carol", "--json")[1]) == []
    code, _, err = run("approvals", "approve", str(steps[0]), "--user", "carol")
    assert code == 1 and f"approval {steps[0]} is already withdrawn" in err
    code, _, err = run("executions", "cancel", str(waiting["id"]))
    assert (code, err.strip()) == (
        1,
        f"error: execution {waiting['id']} is already cancelled",
    )
    code, _, err = run("executions", "retry", str(waiting["id"]))
    assert code == 1 and "is cancelled, not failed" in err
    assert json.loads(run("policies", "show", pid, "--json")[1])["status"] == "in_review"
    # A completed execution cannot be cancelled.
    notice = tmp_path / "notice.yaml"
    notice.write_text(
        "name: notice\ntenant_id: acme\ntype: notification\ntrigger: on_status_change\n"
        "actions: [{type: notify, users: [carol], title: t}]\n"
    )
    run("workflows", "apply", str(notice))
    run("policies", "set-status", pid, "draft")
    run("process", "--sync", "--quiet")
    done = json.loads(run("executions", "list", "--status", "completed", "--json")[1])
    code, _, err = run("executions", "cancel", str(done[0]["id"]))
    assert (code, err.strip()) == (
        1,
        f"error: execution {done[0]['id']} is completed: only a pending, awaiting_approval or "
        "failed execution can be cancelled",
    )
