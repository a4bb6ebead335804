"""A tour of the Dagster UI as a governance operator sees it.

A stack of real processes on an embedded home (the application on SQLite, Dagster's storage
on SQLite, the Redis run coordinator): dagster-daemon, a `gov-pipeline worker` and the
webserver on 127.0.0.1. The tour writes through the CLI and launches jobs through the
webserver's GraphQL (as the launchpad does), then headless Chromium (Debian's package)
captures each page: its text, and a screenshot. The browser tests walk this tour and check
what each page shows; `python -m gov_pipeline.embedded.ui_tour --out docs/ui` takes the
pictures of docs/ui.md.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gov_pipeline.config import load_settings
from gov_pipeline.embedded.instance import ROOT, WORKSPACE, dagster_env, embedded_dagster_home
from gov_pipeline.embedded.processes import bin_path, running_daemon, running_process
from gov_pipeline.embedded.webhook_receiver import Received, webhook_receiver

CHROMIUM = [
    "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
    "--no-first-run", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--virtual-time-budget=20000",
]  # fmt: skip
TALL = ("approval_backlog", "run_queue", "policy_register", "change_backlog", "run_failed")
# The figures table, then the chart and the overdue and per-tenant tables below it; the row
# of the report file (a path of the host) stays below the picture.
TALLER = {"compliance_report": 1866}
LOCATION = "gov_pipeline"  # workspace.yaml's location name
FINANCE_HOOK = """\
name: finance hook
description: POST a Finance policy's review to the finance system.
tenant_id: acme
type: notification
trigger: on_status_change
owner_id: olivia
conditions:
  all:
    - {field: new.status, op: changed_to, value: in_review}
    - {field: policy_type, op: eq, value: Finance}
actions:
  - {type: webhook, url: "URL", secret_env: GOV_TOUR_HOOK_SECRET, max_attempts: 2}
"""
PEOPLE = (("carol", "compliance_officer"), ("ciso", "admin"), ("olivia", "policy_owner"),
          ("mallory", "viewer"))  # fmt: skip
ENDED = ("SUCCESS", "FAILURE", "CANCELED")
# Policies of the compliance report (type HR: no workflow runs on them), in most statuses;
# the published one's review is overdue, the archived one's needs none.
REPORT_POLICIES = [
    {"title": "Onboarding", "policy_type": "HR", "status": "draft"},
    {"title": "Travel", "policy_type": "HR", "status": "draft"},
    {"title": "Leave", "policy_type": "HR", "status": "draft"},
    {"title": "Remote work", "policy_type": "HR", "status": "approved"},
    {"title": "Code of conduct", "policy_type": "HR", "status": "published",
     "next_review_date": "2024-01-15"},
    {"title": "Old expenses", "policy_type": "HR", "status": "archived",
     "next_review_date": "2023-01-01"},
]  # fmt: skip


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def page_text(dom: str) -> str:
    """The visible text of a rendered page, one line, white space folded."""
    text = re.sub(r"<script.*?</script>|<style.*?</style>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", text))).strip()


@dataclass
class Browser:
    """Headless Chromium with a profile of its own; each page is a new process."""

    profile: Path
    shots: Path | None = None

    def _run(self, *args: str, height: int = 900, timeout: float = 120) -> str:
        done = subprocess.run(
            [*CHROMIUM, f"--window-size=1400,{height}", f"--user-data-dir={self.profile}",
             *args],
            capture_output=True, text=True, timeout=timeout, check=True,
        )  # fmt: skip
        return done.stdout

    def dom(self, url: str, shot: str | None = None) -> str:
        """The page's DOM once it has rendered; with `shot`, its screenshot too."""
        if shot is not None and self.shots is not None:
            self.shots.mkdir(parents=True, exist_ok=True)
            # A page whose tables are what it shows is taller.
            height = TALLER.get(shot, 1500 if shot in TALL else 900)
            self._run(f"--screenshot={self.shots / (shot + '.png')}", url, height=height)
        return self._run("--dump-dom", url)

    def text(self, url: str, shot: str | None = None) -> str:
        """The page's text once it has rendered; with `shot`, its screenshot too."""
        return page_text(self.dom(url, shot))

    @contextmanager
    def _devtools(self, url: str) -> Iterator[DevTools]:
        """`url` open in a browser driven over Chromium's DevTools protocol."""
        from websockets.sync.client import connect

        args = [a for a in CHROMIUM if not a.startswith("--virtual-time-budget")]
        process = subprocess.Popen(
            [*args, "--window-size=1400,900", f"--user-data-dir={self.profile}",
             "--remote-debugging-port=0", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            with connect(_devtools_url(process), max_size=None) as channel:
                devtools = DevTools(channel)
                target = devtools.call("Target.createTarget", url=url)["targetId"]
                devtools.session = devtools.call(
                    "Target.attachToTarget", targetId=target, flatten=True
                )["sessionId"]
                yield devtools
        finally:
            process.kill()
            process.wait()

    def _shoot(self, devtools: DevTools, shot: str, path: Path | None = None) -> None:
        target = path if path is not None else (self.shots / f"{shot}.png" if self.shots else None)
        if target is None:
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        image = devtools.call("Page.captureScreenshot", format="png")["data"]
        target.write_bytes(base64.b64decode(image))

    def text_showing(
        self, url: str, expected: Sequence[str], shot: str, timeout_s: float = 90,
        screenshot: Path | None = None,
    ) -> str:  # fmt: skip
        """The page's text once it shows every string of `expected` (a page that fills in
        as its queries answer, however loaded the machine), with its screenshot; if it never
        does, the text it shows after `timeout_s`, for the caller's assertion to quote."""
        condition = " && ".join(f"document.body.innerText.includes({e!r})" for e in expected)
        with self._devtools(url) as devtools:
            with suppress(TimeoutError):
                devtools.wait_for(f"document.body && {condition or 'true'}", timeout_s)
            time.sleep(0.5)  # what renders with the last answer settles
            self._shoot(devtools, shot, screenshot)
            return re.sub(r"\s+", " ", str(devtools.evaluate("document.body.innerText"))).strip()

    def text_after_click(self, url: str, label: str, shot: str, timeout_s: float = 60) -> str:
        """The page's text after a click on the element whose text is `label` (a tab that
        no URL selects), driven over Chromium's DevTools protocol; its screenshot too."""
        with self._devtools(url) as devtools:
            devtools.wait_for(f"document.body && document.body.innerText.includes({label!r})",
                              timeout_s)  # fmt: skip
            devtools.evaluate(
                "[...document.querySelectorAll('button, [role=tab], a, span')]"
                f".reverse().find(e => e.textContent.trim() === {label!r}).click()"
            )
            time.sleep(2.0)  # the tab's content renders (its query answers first)
            text = str(devtools.evaluate("document.body.innerText"))
            self._shoot(devtools, shot)
        return re.sub(r"\s+", " ", text).strip()


def _devtools_url(process: subprocess.Popen[str], timeout_s: float = 30) -> str:
    """The browser's DevTools address, from the line Chromium prints on start."""
    deadline = time.monotonic() + timeout_s
    assert process.stderr is not None
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        found = re.search(r"DevTools listening on (ws://\S+)", line)
        if found:
            return found.group(1)
        if not line and process.poll() is not None:
            break
    raise RuntimeError("Chromium did not open its DevTools port")


@dataclass
class DevTools:
    """Calls of Chromium's DevTools protocol over one socket (events are skipped)."""

    channel: Any
    session: str | None = None
    _next: int = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._next += 1
        message: dict[str, Any] = {"id": self._next, "method": method, "params": params}
        if self.session is not None and not method.startswith("Target."):
            message["sessionId"] = self.session
        self.channel.send(json.dumps(message))
        while True:
            reply = json.loads(self.channel.recv())
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return dict(reply.get("result", {}))

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}: {result['exceptionDetails']}")
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.evaluate(expression):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the page never showed: {expression}")
            time.sleep(0.25)


@dataclass
class Stack:
    """The running processes of the tour, and how to talk to them."""

    home: Path
    env: dict[str, str]
    url: str
    stack: ExitStack
    receiver: tuple[str, Received]
    log_dir: Path
    worker_stop: Callable[[], None] = field(default=lambda: None)

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [bin_path("gov-pipeline"), *args], cwd=ROOT, env=self.env, capture_output=True,
            text=True, timeout=120,
        )  # fmt: skip
        if check and done.returncode != 0:
            raise RuntimeError(f"gov-pipeline {' '.join(args)}: {done.stderr.strip()}")
        return done

    def graphql(self, query: str, variables: Mapping[str, Any] | None = None) -> Any:
        body = json.dumps({"query": query, "variables": dict(variables or {})}).encode()
        request = urllib.request.Request(
            f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())

    def launch(self, job: str, config: Mapping[str, Any] | None = None) -> str:
        """Launch `job` as the launchpad does; returns the run id."""
        found = self.graphql(LAUNCH, {"executionParams": {
            "selector": {"repositoryLocationName": LOCATION, "repositoryName": "__repository__",
                         "jobName": job, "assetSelection": [], "assetCheckSelection": []},
            "runConfigData": json.dumps(dict(config or {})),
            "mode": "default",
            "executionMetadata": {"tags": [{"key": "dagster/from_ui", "value": "true"}]},
        }})  # fmt: skip
        result = found["data"]["launchPipelineExecution"]
        if result["__typename"] != "LaunchRunSuccess":
            raise RuntimeError(f"launching {job}: {result}")
        return str(result["run"]["runId"])

    def runs(self) -> list[dict[str, Any]]:
        found = self.graphql(RUNS)
        return list(found["data"]["runsOrError"]["results"])

    def wait_run(self, run_id: str, timeout_s: float = 180) -> str:
        """The run's status once it ended."""
        run: dict[str, Any] = {}

        def ended() -> bool:
            nonlocal run
            run = self.graphql(RUN, {"runId": run_id})["data"]["runOrError"]
            return run.get("status") in ENDED

        wait_for(ended, timeout_s, f"run {run_id} to end")
        return str(run["status"])

    def wait_idle(self, timeout_s: float = 240) -> None:
        """Every change processed and every run ended."""

        def idle() -> bool:
            pending = self.cli("verify", "--grace", "0", "--no-dagster", check=False)
            return pending.returncode == 0 and all(r["status"] in ENDED for r in self.runs())

        wait_for(idle, timeout_s, "every change processed and every run ended")

    def refresh(self) -> str:
        """Refresh the governance assets now (as the Materialize button would); returns the
        run's status, once every run has ended."""
        status = self.wait_run(self.launch("refresh_governance"))
        self.wait_idle()
        return status

    def refreshes(self) -> set[str]:
        return {r["runId"] for r in self.runs() if r["jobName"] == "refresh_governance"}

    def refreshed_after(self, known: set[str], timeout_s: float = 120) -> None:
        """Wait for the refresh the refresh sensor requests after the runs that ended since
        `known` was taken (`refreshes()`), and for every run to end."""
        wait_for(lambda: bool(self.refreshes() - known), timeout_s, "the sensor's refresh")
        self.wait_idle()

    def restart_worker(self, **env: str) -> None:
        """Stop the worker and start another with `env` added (a configuration change)."""
        self.worker_stop()
        self.env.update(env)
        self.worker_stop = start_worker(self.stack, self.env, self.log_dir)


LAUNCH = """
mutation Launch($executionParams: ExecutionParams!) {
  launchPipelineExecution(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on PythonError { message }
  }
}"""
RUNS = """
query Runs { runsOrError(limit: 200) { ... on Runs { results { runId jobName status
  tags { key value } } } } }"""
RUN = "query Run($runId: ID!) { runOrError(runId: $runId) { ... on Run { status } } }"


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def start_worker(stack: ExitStack, env: Mapping[str, str], log_dir: Path) -> Callable[[], None]:
    args = [bin_path("gov-pipeline"), "worker", "--mode", "execute", "-w", str(WORKSPACE)]
    inner = ExitStack()
    inner.enter_context(running_process(args, env, log_dir / "worker.log"))
    stack.callback(inner.close)
    return inner.close


def webserver_up(url: str) -> bool:
    """Whether the Dagster webserver at `url` answers."""
    try:
        with urllib.request.urlopen(f"{url}/server_info", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@contextmanager
def ui_stack(home: Path, redis_prefix: str, port: int | None = None) -> Iterator[Stack]:
    """The daemon, a worker and the webserver on an embedded home under `home`; webhooks
    may go only to 127.0.0.2 at first (the tour's receiver is on 127.0.0.1)."""
    home.mkdir(parents=True, exist_ok=True)
    base = {"GOV_PIPELINE_HOME": str(home), "GOV_PIPELINE_REDIS_PREFIX": redis_prefix}
    settings = load_settings({**os.environ, **base})
    dagster_home = embedded_dagster_home(settings, redis_prefix)
    secret = "tour-" + os.urandom(8).hex()
    extra = {
        **base, "GOV_PIPELINE_WEBHOOK_ALLOWED_HOSTS": "127.0.0.2",
        "GOV_PIPELINE_WEBHOOK_RETRY_DELAY": "0.1", "GOV_TOUR_HOOK_SECRET": secret,
        "GOV_PIPELINE_SENSOR_INTERVAL": "5", "GOV_PIPELINE_GOVERNANCE_REFRESH": "5",
    }  # fmt: skip
    env = dagster_env(settings, dagster_home, extra)
    log_dir = home / "logs"
    port = port or free_port()
    with ExitStack() as stack:
        receiver = stack.enter_context(webhook_receiver(secret, (200,)))
        stack.enter_context(running_daemon(env, log_dir / "daemon.log"))
        web = [bin_path("dagster-webserver"), "-w", str(WORKSPACE), "-h", "127.0.0.1",
               "-p", str(port)]  # fmt: skip
        stack.enter_context(running_process(web, env, log_dir / "webserver.log"))
        tour = Stack(home, env, f"http://127.0.0.1:{port}", stack, receiver, log_dir)
        tour.cli("db", "upgrade")
        tour.worker_stop = start_worker(stack, env, log_dir)
        wait_for(lambda: webserver_up(tour.url), 180, "the webserver")
        tour.graphql("mutation { setNuxSeen }")  # no welcome dialog over the pages
        yield tour


def set_up_tenant(stack: Stack) -> None:
    """Tenant acme, its people, the example approval and a webhook to the tour's receiver."""
    stack.cli("tenants", "create", "acme", "--name", "Acme Corp")
    for user, role in PEOPLE:
        stack.cli("users", "create", user, "-t", "acme", "--role", role)
    hook = stack.home / "finance_hook.yaml"
    hook.write_text(FINANCE_HOOK.replace("URL", stack.receiver[0]))
    stack.cli("workflows", "apply", str(ROOT / "examples/workflows/policy_approval.yaml"),
              str(hook))  # fmt: skip


def start_reviews(stack: Stack) -> tuple[int, int]:
    """A security policy into review (the two-step approval starts) and a Finance policy
    into review (its webhook is refused: the host is not allowed). Returns their ids."""
    ids = []
    for title, kind in (("Access control", "Information Security"), ("Budget", "Finance")):
        made = stack.cli("policies", "create", "-t", "acme", "--title", title, "--type", kind,
                         "--owner", "olivia", "--json")  # fmt: skip
        ids.append(int(json.loads(made.stdout)["id"]))
    for pid in ids:
        stack.cli("policies", "set-status", str(pid), "in_review", "-t", "acme")
    stack.wait_idle()
    return ids[0], ids[1]


def approvals_of(stack: Stack) -> list[dict[str, Any]]:
    listed = stack.cli("approvals", "list", "-t", "acme", "--json")
    return sorted(json.loads(listed.stdout), key=lambda a: int(a["id"]))


def decide(stack: Stack, approval_id: int, user: str) -> tuple[str, str]:
    """Decide from the launchpad; returns (run id, its status)."""
    run_id = stack.launch("decide_approval", {"ops": {"decide": {"config": {
        "tenant_id": "acme", "approval_id": approval_id, "decision": "approve",
        "user_id": user, "comment": f"approved by {user}",
    }}}})  # fmt: skip
    return run_id, stack.wait_run(run_id)


def report_compliance(stack: Stack) -> str:
    """Import REPORT_POLICIES into acme, then materialize `compliance_report` for acme (its
    job launched through the webserver, on the reporting lane); returns the run id."""
    seed = stack.home / "report_policies.json"
    seed.write_text(json.dumps(REPORT_POLICIES))
    stack.cli("policies", "import", str(seed), "-t", "acme", "--quiet")
    stack.wait_idle()
    config = {"ops": {"compliance_report": {"config": {"tenant_id": "acme"}}}}
    run_id = stack.launch("report_compliance", config)
    if (status := stack.wait_run(run_id)) != "SUCCESS":
        raise RuntimeError(f"report_compliance run {run_id} ended {status}")
    return run_id


def failed_run(stack: Stack) -> str:
    """The processing run whose workflow failed."""
    for run in stack.runs():
        tags = {t["key"]: t["value"] for t in run["tags"]}
        if run["jobName"] == "process_changes" and tags.get("gov/outcome") == "failed":
            return str(run["runId"])
    raise LookupError("no failed processing run")


PAGES = {
    "runs_failed": "/runs?q%5B0%5D=tag%3Agov%2Foutcome%3Dfailed",
    # Two checks on the asset: the page shows the one named (else the first).
    "outcomes_checks": (
        "/assets/workflow_outcomes?view=checks&checkDetail=no_unresolved_failed_executions"
    ),
    "approval_backlog": "/assets/approval_backlog",
    "policy_register": "/assets/policy_register",
    "change_backlog": "/assets/change_backlog",
    "run_queue": "/assets/run_queue",
    "concurrency": "/deployment/concurrency",
    "catalog": "/assets",
    # The Events tab: the latest materialization's metadata, wide enough for the chart.
    "compliance_report": "/assets/compliance_report?view=events",
    "decide_launchpad": f"/locations/{LOCATION}/jobs/decide_approval/playground/setup?"
    + urllib.parse.urlencode(
        {
            "config": "ops:\n  decide:\n    config:\n      tenant_id: acme\n"
            "      approval_id: 2\n      decision: approve\n"
            "      user_id: ciso\n      comment: Signed off\n"
        }
    ),
}


def take_pictures(out: Path, redis_prefix: str) -> list[Path]:
    """The tour for docs/ui.md: every page of PAGES at the moment it tells its story."""
    with tempfile.TemporaryDirectory() as tmp, ui_stack(Path(tmp) / "home", redis_prefix) as s:
        browser = Browser(Path(tmp) / "profile", out)
        set_up_tenant(s)
        start_reviews(s)
        s.refreshed_after(set())
        browser.text(s.url + PAGES["runs_failed"], "runs_failed")
        browser.text(f"{s.url}/runs/{failed_run(s)}", "run_failed")
        browser.text(s.url + PAGES["outcomes_checks"], "outcomes_checks_red")
        first = approvals_of(s)[0]
        known = s.refreshes()
        decide(s, int(first["id"]), "carol")
        s.refreshed_after(known)
        s.cli("queue", "pause", "export")
        s.refresh()
        for name in ("approval_backlog", "policy_register", "change_backlog", "run_queue",
                     "catalog", "decide_launchpad"):  # fmt: skip
            browser.text(s.url + PAGES[name], name)
        s.cli("queue", "resume", "export")
        s.restart_worker(GOV_PIPELINE_WEBHOOK_ALLOWED_HOSTS="127.0.0.1")
        known = s.refreshes()
        s.wait_run(s.launch("retry_executions", {"ops": {"retry": {"config": {
            "tenant_id": "acme"}}}}))  # fmt: skip
        s.refreshed_after(known)
        browser.text(s.url + PAGES["outcomes_checks"], "outcomes_checks_green")
        report_compliance(s)
        browser.text(s.url + PAGES["compliance_report"], "compliance_report")
        browser.text_after_click(s.url + PAGES["concurrency"], "Run tag concurrency",
                                 "concurrency")  # fmt: skip
    return sorted(out.glob("*.png"))


def forget_redis_keys(prefix: str) -> None:
    """Delete the tour's Redis keys (it ran under a prefix of its own)."""
    from gov_pipeline.coordinator.queue import delete_queue

    delete_queue(load_settings().redis_url, prefix)


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Screenshots of the Dagster UI's governance pages (docs/ui.md)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "ui")
    parser.add_argument("--redis-prefix", default=f"govtour:{os.getpid()}")
    args = parser.parse_args()
    if shutil.which("chromium") is None:
        raise SystemExit("error: chromium is not installed (make browser installs it)")
    try:
        written = take_pictures(args.out, args.redis_prefix)
    finally:
        forget_redis_keys(args.redis_prefix)
    for path in written:
        shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        sys.stdout.write(f"wrote {shown}\n")


if __name__ == "__main__":
    main()
