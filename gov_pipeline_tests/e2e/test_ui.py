"""Governance in the Dagster UI, checked in real headless Chromium against the real
webserver, with the daemon and a worker running (gov_pipeline/embedded/ui_tour.py starts
them): what each page shows, not only that it loads. Screenshots go to test-artifacts/ui/
(the compliance report's to test-artifacts/browser/).

The tests are one story, in order, on one stack: a workflow whose webhook host is not
allowed fails (its run failed and tagged, the ERROR event, the outcomes check red); a policy
waits for its second approver (the backlog shows it), decided from the launchpad, refused for
a non-approver; a paused lane shows as paused; the host allowed, a retry turns the check
green; last, the compliance report on more policies shows its figures and its chart. The
assets are refreshed by the refresh sensor after each run that changes the state (the tests
wait for it), and by hand only after pausing a lane (no run)."""

from __future__ import annotations

import base64
import json
import re
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from gov_pipeline.domain.charts import PLOT_HEIGHT
from gov_pipeline.domain.statuses import PolicyStatus
from gov_pipeline.embedded.instance import ROOT
from gov_pipeline.embedded.ui_tour import (
    PAGES,
    Browser,
    Stack,
    approvals_of,
    decide,
    failed_run,
    page_text,
    report_compliance,
    set_up_tenant,
    start_reviews,
    ui_stack,
)
from gov_pipeline_tests.conftest import own_redis_prefix

pytestmark = pytest.mark.e2e

SHOTS = ROOT / "test-artifacts" / "ui"
BROWSER_SHOTS = ROOT / "test-artifacts" / "browser"  # the compliance report's picture
SVG = "{http://www.w3.org/2000/svg}"


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
    assert found["runQueuingSupported"] is True  # a QueuedRunCoordinator to the UI


def test_the_concurrency_page_shows_the_run_queues_limits(tour: dict[str, Any]) -> None:
    """Deployment -> Concurrency: the global limit and each lane's, from the coordinator."""
    stack: Stack = tour["stack"]
    browser = tour["browser"]
    page = browser.text_after_click(stack.url + PAGES["concurrency"], "Run tag concurrency",
                                    "concurrency")  # fmt: skip
    assert "not supported" not in page, page[:2000]
    assert "Max concurrent runs" in page and "10" in page, page[:2000]
    assert "gov/queue" in page and "policy" in page and "audit" in page, page[:2000]


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


def _chart_of(dom: str) -> ET.Element:
    """The SVG of the page's "Policies by status" image (its data URI), parsed."""
    images = [tag for tag in re.findall(r"<img [^>]*>", dom) if 'alt="Policies by status"' in tag]
    assert len(images) == 1, images
    found = re.search(r'src="data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)"', images[0])
    assert found, images[0][:200]
    return ET.fromstring(base64.b64decode(found.group(1)))


def test_the_compliance_report_shows_its_figures_and_its_chart(tour: dict[str, Any]) -> None:
    """Its latest materialization (the asset's Events tab): the figures table, the overdue
    review, and the chart shown inline (not behind "Show Markdown"), one bar per status."""
    stack: Stack = tour["stack"]
    report_compliance(stack)
    # What to expect, from the records as the CLI lists them (not from the report).
    listed = stack.cli("policies", "list", "-t", "acme", "--json", "--limit", "1000")
    policies = json.loads(listed.stdout)["items"]
    counts = Counter(p["status"] for p in policies)
    by_status = [(str(s), counts[s]) for s in PolicyStatus]
    assert counts["draft"] == 3  # the seed is there
    today = datetime.now(UTC).date()
    overdue = [p for p in policies if p["status"] != "archived" and p["next_review_date"]
               and date.fromisoformat(p["next_review_date"]) < today]  # fmt: skip
    assert [p["title"] for p in overdue] == ["Code of conduct"]
    made = json.loads(stack.cli("report", "compliance", "-t", "acme", "--json").stdout)
    decided = made["approval_turnaround_hours"]["decided"]
    browser = Browser(tour["browser"].profile, BROWSER_SHOTS)
    dom = browser.dom(stack.url + PAGES["compliance_report"], "compliance_report")
    page = page_text(dom)
    assert "Materialized in run" in page and "scope acme" in page
    figures = " ".join(f"policies {s} {n}" for s, n in by_status)
    assert (
        f"figure value policies {len(policies)} {figures} overdue reviews 1 "
        f"overdue reviews policy 1 overdue reviews sop 0 overdue reviews risk 0 "
        f"approvals decided {decided} "
    ) in page
    assert f"SLA breaches {made['sla_breaches']['total']} " in page
    (late,) = overdue
    days = (today - date.fromisoformat(late["next_review_date"])).days
    assert f"acme policy {late['id']} Code of conduct published 2024-01-15 {days}" in page
    # The chart: inline, its bars proportional to the counts, each labelled.
    assert "Show Markdown" not in page
    chart = _chart_of(dom)
    (bars,) = [g for g in chart.iter(f"{SVG}g") if g.get("id") == "bars"]
    top = max(n for _, n in by_status)
    heights = [int(r.get("height", "-1")) for r in bars.iter(f"{SVG}rect")]
    assert heights == [round(PLOT_HEIGHT * n / top) for _, n in by_status]
    assert [t.text for t in chart.iter(f"{SVG}text")] == [f"{s}: {n}" for s, n in by_status]
    shot = BROWSER_SHOTS / "compliance_report.png"
    assert shot.is_file() and shot.stat().st_size > 10_000


def test_every_screenshot_was_written() -> None:
    names = ["runs_failed", "run_failed", "outcomes_checks_red", "approval_backlog",
             "decide_refused", "run_queue", "outcomes_checks_green"]  # fmt: skip
    for name in names:
        path = SHOTS / f"{name}.png"
        assert path.is_file() and path.stat().st_size > 10_000, path
    assert Path(SHOTS).is_dir()
