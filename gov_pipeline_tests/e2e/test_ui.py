"""Governance in the Dagster UI, checked in real headless Chromium against the real
webserver, with the daemon and a worker running (gov_pipeline/embedded/ui_tour.py starts
them): what each page shows, not only that it loads. Screenshots go to test-artifacts/ui/.

The tests are one story, in order, on one stack: a workflow whose webhook host is not
allowed fails (its run failed and tagged, the ERROR event, the outcomes check red); a policy
waits for its second approver (the backlog shows it), decided from the launchpad, refused for
a non-approver; a paused lane shows as paused; the host allowed, a retry turns the check
green. The assets are refreshed by the refresh sensor after each run that changes the state
(the tests wait for it), and by hand only after pausing a lane (no run)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gov_pipeline.embedded.instance import ROOT
from gov_pipeline.embedded.ui_tour import (
    PAGES,
    Browser,
    Stack,
    approvals_of,
    decide,
    failed_run,
    set_up_tenant,
    start_reviews,
    ui_stack,
)
from gov_pipeline_tests.conftest import own_redis_prefix

pytestmark = pytest.mark.e2e

SHOTS = ROOT / "test-artifacts" / "ui"


@pytest.fixture(scope="module")
def tour(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    home = tmp_path_factory.mktemp("ui") / "home"
    with own_redis_prefix() as prefix, ui_stack(home, prefix) as stack:
        set_up_tenant(stack)
        secure, finance = start_reviews(stack)
        stack.refreshed_after(set())  # the refresh sensor follows the processing runs
        browser = Browser(tmp_path_factory.mktemp("chromium"), SHOTS)
        yield {"stack": stack, "browser": browser, "secure": secure, "finance": finance}


def _page(tour: dict[str, Any], path: str, shot: str) -> str:
    stack: Stack = tour["stack"]
    text: str = tour["browser"].text(stack.url + path, shot)
    return text


def test_a_failed_workflow_shows_as_a_failed_run_with_its_reason(tour: dict[str, Any]) -> None:
    stack: Stack = tour["stack"]
    run_id = failed_run(stack)
    listed = _page(tour, PAGES["runs_failed"], "runs_failed")
    assert "Tag is gov/outcome=failed" in listed
    assert run_id[:8] in listed and "Failure" in listed
    assert "gov/outcome: failed" in listed and "gov/workflows: finance hook" in listed
    # Only that run: the filter works (the other processing runs are not failed).
    others = [r["runId"][:8] for r in stack.runs() if r["runId"] != run_id]
    assert others and not any(other in listed for other in others)
    page = _page(tour, f"/runs/{run_id}", "run_failed")
    reason = "host '127.0.0.1:" in page and "is not allow-listed" in page
    assert "ERROR" in page and reason
    assert f"of workflow 'finance hook' on policy {tour['finance']} (tenant acme) failed" in page


def test_the_outcomes_check_is_red_with_a_sentence(tour: dict[str, Any]) -> None:
    page = _page(tour, PAGES["outcomes_checks"], "outcomes_checks_red")
    assert "no_unresolved_failed_executions" in page and "Failed" in page
    assert "execution(s) failed and are not resolved" in page
    assert "retry them (the retry_executions job" in page


def test_a_policy_waiting_for_its_second_approver_is_in_the_backlog(
    tour: dict[str, Any],
) -> None:
    stack: Stack = tour["stack"]
    first, second = approvals_of(stack)
    known = stack.refreshes()
    _, status = decide(stack, int(first["id"]), "carol")
    assert status == "SUCCESS"
    stack.refreshed_after(known)
    page = _page(tour, PAGES["approval_backlog"], "approval_backlog")
    row = f"{second['id']} acme policy {tour['secure']} Policy approval CISO sign-off users ciso"
    assert row in page
    assert "0.0 h" in page  # its age; due in 24 h: not overdue
    tour["second"] = int(second["id"])


def test_deciding_from_the_launchpad_refuses_a_non_approver_and_continues_the_flow(
    tour: dict[str, Any],
) -> None:
    stack: Stack = tour["stack"]
    refused, status = decide(stack, tour["second"], "mallory")
    assert status == "FAILURE"
    page = _page(tour, f"/runs/{refused}", "decide_refused")
    assert f"user 'mallory' may not decide approval {tour['second']}" in page
    assert _policy(stack, tour["secure"])["status"] == "in_review"
    done, status = decide(stack, tour["second"], "ciso")
    assert status == "SUCCESS"
    assert _policy(stack, tour["secure"])["status"] == "approved"
    page = _page(tour, f"/runs/{done}", "decide_approved")
    assert f"approval {tour['second']} approved by ciso" in page


def _policy(stack: Stack, pid: int) -> dict[str, Any]:
    shown = stack.cli("policies", "show", str(pid), "-t", "acme", "--json")
    data: dict[str, Any] = json.loads(shown.stdout)
    return data


def test_the_queue_shows_a_paused_lane_and_the_live_worker(tour: dict[str, Any]) -> None:
    stack: Stack = tour["stack"]
    stack.cli("queue", "pause", "export")
    try:
        assert stack.refresh() == "SUCCESS"
        page = _page(tour, PAGES["run_queue"], "run_queue")
    finally:
        stack.cli("queue", "resume", "export")
    assert "paused_lanes" in page and "export 0 0 2 PAUSED" in page
    assert "policy 0 0 5 no" in page
    assert "execute * 1 yes" in page  # the worker: mode, lanes, concurrency, alive


def test_the_ui_shows_the_coordinators_limits_for_a_queued_run(tour: dict[str, Any]) -> None:
    """What the "View queue criteria" dialog reads (the instance class fills it)."""
    stack: Stack = tour["stack"]
    found = stack.graphql(
        "{ instance { runQueuingSupported runQueueConfig { maxConcurrentRuns "
        "tagConcurrencyLimitsYaml } } }"
    )["data"]["instance"]
    assert found["runQueueConfig"]["maxConcurrentRuns"] == 10
    assert "gov/queue" in found["runQueueConfig"]["tagConcurrencyLimitsYaml"]
    assert found["runQueuingSupported"] is False  # (Dagster's own queue only)


def test_after_a_retry_that_succeeds_the_check_is_green(tour: dict[str, Any]) -> None:
    stack: Stack = tour["stack"]
    stack.restart_worker(GOV_PIPELINE_WEBHOOK_ALLOWED_HOSTS="127.0.0.1")
    known = stack.refreshes()
    run_id = stack.launch("retry_executions", {"ops": {"retry": {"config": {"tenant_id": "acme"}}}})
    assert stack.wait_run(run_id) == "SUCCESS"
    assert len(stack.receiver[1].bodies) == 1  # delivered, signed (the receiver checks)
    stack.refreshed_after(known)
    page = _page(tour, PAGES["outcomes_checks"], "outcomes_checks_green")
    assert "No execution is failed and unresolved." in page and "Passed" in page


def test_every_screenshot_was_written() -> None:
    names = ["runs_failed", "run_failed", "outcomes_checks_red", "approval_backlog",
             "decide_refused", "run_queue", "outcomes_checks_green"]  # fmt: skip
    for name in names:
        path = SHOTS / f"{name}.png"
        assert path.is_file() and path.stat().st_size > 10_000, path
    assert Path(SHOTS).is_dir()
