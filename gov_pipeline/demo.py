"""`make demo`: the whole story on the embedded default, through the real sensor and runs.

Applies the example workflows, creates a handful of policies, walks one through the
lifecycle with its two-step approval (draft -> in_review -> approved -> published), has
another rejected and a third sent back with changes requested; then a high risk is assessed
and accepted by a risk manager, its runs on the `assessment` lane, the decision recorded
the way another application would: one INSERT into `approval_decisions`. A real `dagster-daemon` on
the embedded instance (SQLite, no server) runs the change sensor and launches the
`process_changes` runs; the demo waits for them and prints what happened.
`--sync` processes in this process instead (no Dagster).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path

import click
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from gov_pipeline.config import Settings, load_settings
from gov_pipeline.db.engine import engine_for, make_sessionmaker
from gov_pipeline.db.integrity import ALL_TENANTS
from gov_pipeline.db.migrate import upgrade
from gov_pipeline.db.models import (
    Approval,
    EmailDelivery,
    EntityChange,
    Notification,
    Policy,
    ProcessedChange,
    Risk,
    Task,
    WebhookDelivery,
    WorkflowExecution,
)
from gov_pipeline.domain.definitions import load_definitions
from gov_pipeline.domain.retry import RetryPolicy
from gov_pipeline.embedded.instance import dagster_env, embedded_dagster_home
from gov_pipeline.embedded.processes import launch_job, running_daemon, running_worker
from gov_pipeline.embedded.smtp_receiver import Inbox, smtp_receiver
from gov_pipeline.embedded.webhook_receiver import Received, webhook_receiver
from gov_pipeline.runners.emails import send_pending
from gov_pipeline.runners.escalation import escalate_overdue
from gov_pipeline.runners.sync import process_pending
from gov_pipeline.services import approvals, policies, records, tenants, workflows
from gov_pipeline.services.skips import skipped_total

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "workflows"
TENANT = "acme"


def _say(text: str) -> None:
    click.echo(text)


class Demo:
    def __init__(self, sessions: sessionmaker[Session], settings: Settings, sync: bool) -> None:
        self.sessions = sessions
        self.settings = settings
        self.sync = sync

    def process(self, timeout_s: float = 120.0) -> None:
        """Let the changes be processed: here (--sync), or by the sensor and its runs."""
        started = time.monotonic()
        if self.sync:
            stats = process_pending(self.sessions, self.settings, retry=RetryPolicy(delay_s=0.1))
            _say(f"    processed {stats.changes} change(s) here: {stats.executions} execution(s)")
            return
        while True:
            backlog = unprocessed_changes(self.sessions)
            if backlog == 0:
                break
            if time.monotonic() - started > timeout_s:
                raise RuntimeError(
                    f"{backlog} change(s) still unprocessed after {timeout_s:.0f}s; "
                    "see .gov_pipeline/demo/daemon.log"
                )
            time.sleep(0.5)
        _say(f"    the sensor and its runs processed them in {time.monotonic() - started:.1f}s")

    def policy(self, title: str, policy_type: str, owner: str) -> int:
        with self.sessions.begin() as session:
            pid = policies.create_policy(
                session,
                tenant_id=TENANT,
                fields={"title": title, "policy_type": policy_type, "owner_id": owner},
                actor=policies.Actor(owner),
            ).id
        _say(f"  created policy {pid} '{title}' ({policy_type}), owner {owner}")
        return pid

    def move(self, pid: int, status: str, actor: str) -> None:
        with self.sessions.begin() as session:
            policy = policies.transition_status(
                session, tenant_id=TENANT, policy_id=pid, to_status=status,
                actor=policies.Actor(actor),
            )  # fmt: skip
            _say(f"  {actor} moves policy {pid} to {policy.status}")

    def open_step(self, pid: int) -> Approval:
        with self.sessions.begin() as session:
            return session.scalars(
                select(Approval).where(Approval.entity_id == str(pid), Approval.status == "pending")
            ).one()

    def decide(self, pid: int, user: str, decision: str, comment: str) -> None:
        step = self.open_step(pid)
        with self.sessions.begin() as session:
            approvals.decide(
                session, tenant_id=TENANT, approval_id=step.id, user_id=user,
                decision=decision, comment=comment,
                signature={"type": "typed", "data": user.title()},
            )  # fmt: skip
        _say(f"  {user} decides '{decision}' on step {step.step_index + 1} ({step.name})")

    def risk(self, title: str, likelihood: int, impact: int, owner: str) -> int:
        with self.sessions.begin() as session:
            risk = records.create_record(
                session, "risk", tenant_id=TENANT,
                fields={"title": title, "category": "operational", "owner_id": owner,
                        "likelihood": likelihood, "impact": impact},
                actor=records.Actor(owner),
            )  # fmt: skip
            assert isinstance(risk, Risk)
            rid, score = risk.id, risk.risk_score
        _say(f"  created risk {rid} '{title}', likelihood {likelihood} x impact {impact}: "
             f"score {score}, owner {owner}")  # fmt: skip
        return rid

    def assess(self, rid: int, actor: str) -> None:
        with self.sessions.begin() as session:
            risk = records.transition_record(
                session, "risk", tenant_id=TENANT, record_id=rid, to_status="assessed",
                actor=records.Actor(actor),
            )  # fmt: skip
            _say(f"  {actor} moves risk {rid} to {risk.status}")

    def decide_by_sql(self, rid: int, user: str, decision: str, comment: str) -> None:
        """The decision as another application sharing the database records it
        (docs/integration.md): one INSERT; processing applies it with the same checks."""
        with self.sessions.begin() as session:
            step = session.scalars(
                select(Approval).where(
                    Approval.entity_type == "risk", Approval.entity_id == str(rid),
                    Approval.status == "pending",
                )
            ).one()  # fmt: skip
            session.execute(
                text(
                    "INSERT INTO approval_decisions (tenant_id, approval_id, decided_by, "
                    "decision, comment) VALUES (:t, :a, :u, :d, :c)"
                ),
                {"t": TENANT, "a": step.id, "u": user, "d": decision, "c": comment},
            )
        _say(f"  the risk register records {user}'s '{decision}' with one INSERT into "
             "approval_decisions")  # fmt: skip

    def escalate(self, pid: int, overdue_hours: float) -> None:
        """What the escalation schedule does once the open step of `pid` has been overdue
        `overdue_hours` (run here as of that time: the demo does not wait a day)."""
        step = self.open_step(pid)
        assert step.due_at is not None
        now = step.due_at + timedelta(hours=overdue_hours)
        with self.sessions.begin() as session:
            before = session.scalar(select(func.max(Notification.id))) or 0
        report = escalate_overdue(self.sessions, self.settings, now=now)
        with self.sessions.begin() as session:
            after = session.get(Approval, step.id)
            assert after is not None
            told = session.scalars(
                select(Notification.user_id).where(Notification.id > before)
            ).all()
            who = ", ".join(after.approver_users + after.approver_roles)
        what = "reassigned to the CISO and escalated" if report.reassigned else "escalated"
        _say(f"  overdue {overdue_hours:.0f} h: step '{step.name}' {what} "
             f"({report.notified} notice(s): {', '.join(sorted(set(told)))}); "
             f"it is for {who} to decide (quorum {after.quorum})")  # fmt: skip

    def risk_status(self, rid: int) -> str:
        with self.sessions.begin() as session:
            risk = session.get(Risk, rid)
            assert risk is not None
            return risk.status

    def status(self, pid: int) -> str:
        with self.sessions.begin() as session:
            policy = session.get(Policy, pid)
            assert policy is not None
            return policy.status


def setup(sessions: sessionmaker[Session], receiver_url: str, webhook_secret: str | None) -> None:
    with sessions.begin() as session:
        tenants.create_tenant(session, tenant_id=TENANT, name="Acme Corp")
        people = {
            "olivia": ["policy_owner"], "paul": ["policy_owner"],
            "carol": ["compliance_officer"], "ciso": ["admin"], "avery": ["auditor"],
            "compliance-lead": ["compliance_officer"], "dave": ["risk_manager"],
        }  # fmt: skip
        for user, roles in people.items():
            tenants.upsert_user(
                session, tenant_id=TENANT, user_id=user, roles=roles,
                email=f"{user}@acme.example" if user in EMAILED else None,
            )  # fmt: skip
        for path in sorted(EXAMPLES.glob("*.yaml")):
            # The publication notice posts to the example receiver; point it at this one's
            # port (any free port, so two demos on one machine do not collide).
            text = path.read_text().replace(EXAMPLE_RECEIVER, receiver_url)
            for definition in load_definitions(text, "yaml", str(path)):
                result = workflows.apply_definition(
                    session, definition, actor="demo", webhook_secret=webhook_secret
                )
                _say(f"  workflow '{result.workflow.name}' v{result.version} ({path.name})")


def story(demo: Demo, step: Callable[[str], None]) -> dict[str, int]:
    step("Three policies go to review; a fourth no workflow cares about")
    access = demo.policy("Access control", "Information Security", "olivia")
    retention = demo.policy("Data retention", "Privacy", "paul")
    crypto = demo.policy("Cryptography standard", "Information Security", "olivia")
    demo.policy("Travel expenses", "Finance", "paul")
    for pid, owner in ((access, "olivia"), (retention, "paul"), (crypto, "olivia")):
        demo.move(pid, "in_review", owner)
    demo.process()
    _say(f"    policy {access} is {demo.status(access)}: the approval waits for Compliance")

    step("Compliance decides: approve one, reject one, ask for changes on one")
    demo.decide(access, "carol", "approve", "Meets ISO 27001 A.9")
    demo.decide(retention, "carol", "reject", "Retention periods are missing")
    demo.decide(crypto, "carol", "request_changes", "Name the approved algorithms")
    demo.process()
    _say(f"    policy {access} is {demo.status(access)}, now waiting for the CISO")
    _say(f"    policy {retention} stays {demo.status(retention)}; paul has a rework task")
    _say(f"    policy {crypto} is back to {demo.status(crypto)}")

    step("The CISO signs off, and the owner publishes")
    demo.decide(access, "ciso", "approve", "Signed off")
    demo.process()
    _say(f"    policy {access} is {demo.status(access)}")
    demo.move(access, "published", "olivia")
    demo.process()

    step("A high risk is assessed; a risk manager accepts it (the assessment lane)")
    outage = demo.risk("Cloud provider outage", likelihood=4, impact=5, owner="olivia")
    demo.assess(outage, "olivia")
    demo.process()
    _say(
        f"    risk {outage} is {demo.risk_status(outage)}: the acceptance waits for a risk manager"
    )
    demo.decide_by_sql(outage, "dave", "approve", "Covered by the exit plan")
    demo.process()
    _say(f"    risk {outage} is {demo.risk_status(outage)}")

    step("A vendor policy nobody decides: escalated to the CISO, then reassigned to her")
    vendor = demo.policy("Cloud vendor security", "Third Party", "paul")
    demo.move(vendor, "in_review", "paul")
    demo.process()
    demo.decide(vendor, "carol", "approve", "Fine by me")
    _say("    one of the two approvals the quorum needs; nobody else decides")
    demo.escalate(vendor, overdue_hours=1)
    demo.escalate(vendor, overdue_hours=48)
    demo.decide(vendor, "ciso", "approve", "Vendor audit report reviewed")
    demo.process()
    _say(f"    policy {vendor} is {demo.status(vendor)}")
    return {"access": access, "retention": retention, "crypto": crypto, "outage": outage,
            "vendor": vendor}  # fmt: skip


def unprocessed_changes(sessions: sessionmaker[Session]) -> int:
    with sessions.begin() as session:
        total = session.scalar(select(func.count()).select_from(EntityChange)) or 0
        done = session.scalar(select(func.count()).select_from(ProcessedChange)) or 0
        deliveries = (
            session.scalar(
                select(func.count())
                .select_from(WebhookDelivery)
                .where(WebhookDelivery.status == "pending")
            )
            or 0
        )
    return int(total - done + deliveries)


def _reachable_redis_prefix(settings: Settings) -> str | None:
    """A fresh key prefix when GOV_PIPELINE_REDIS_URL is set and answers; else None."""
    if not os.environ.get("GOV_PIPELINE_REDIS_URL"):
        return None
    import uuid

    import redis

    try:
        redis.Redis.from_url(settings.redis_url, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        _say(f"  Redis at {settings.redis_url} does not answer ({exc}); using Dagster's queue")
        return None
    return f"{settings.redis_prefix}-demo-{uuid.uuid4().hex[:6]}"


def wait_for_runs_to_end(dagster_home: Path, timeout_s: float = 180.0) -> None:
    """Before the daemon stops: a run whose changes another run's catch-up already took
    may still be queued or running, and stopping the daemon would interrupt it."""
    from dagster import DagsterInstance

    ended = {"SUCCESS", "FAILURE", "CANCELED"}
    deadline = time.monotonic() + timeout_s
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        while time.monotonic() < deadline:
            if all(r.status.value in ended for r in instance.get_runs(limit=500)):
                return
            time.sleep(0.5)
    raise RuntimeError(f"Dagster runs still going after {timeout_s:.0f}s; see daemon.log")


def dagster_runs(dagster_home: Path) -> list[tuple[str, str, str, str]]:
    """(run id, job, status, lane) of the runs on the embedded instance, oldest first."""
    from dagster import DagsterInstance

    os.environ["DAGSTER_HOME"] = str(dagster_home)
    with DagsterInstance.get() as instance:
        runs = instance.get_runs(limit=200)
        return [
            (r.run_id, r.job_name, r.status.value, r.tags.get("gov/queue", "-"))
            for r in reversed(runs)
        ]


def summary(sessions: sessionmaker[Session]) -> str:
    with sessions.begin() as session:
        executions = Counter(session.scalars(select(WorkflowExecution.status)))
        executions["skipped"] += skipped_total(session)  # the changes' skip rows
        steps = Counter(session.scalars(select(Approval.status)))
        notes = Counter(session.scalars(select(Notification.type)))
        tasks = session.scalars(select(Task)).all()
        states = session.execute(select(Policy.id, Policy.title, Policy.status)).all()
        risks = session.execute(select(Risk.id, Risk.title, Risk.status, Risk.risk_score)).all()
    lines = ["", "Summary", "-------"]
    lines.append("executions:    " + ", ".join(f"{k} {v}" for k, v in sorted(executions.items())))
    lines.append("approvals:     " + ", ".join(f"{k} {v}" for k, v in sorted(steps.items())))
    lines.append(
        f"notifications: {sum(notes.values())} ("
        + ", ".join(f"{k} {v}" for k, v in sorted(notes.items()))
        + ")"
    )
    lines.append(
        f"tasks:         {len(tasks)} ("
        + "; ".join(f"{t.title} -> {t.assignee_id}" for t in tasks)
        + ")"
    )
    lines.append(
        "policies:      " + "; ".join(f"{pid} {title}: {status}" for pid, title, status in states)
    )
    lines.append(
        "risks:         "
        + "; ".join(
            f"{rid} {title}: {status} (score {score})" for rid, title, status, score in risks
        )
    )
    return "\n".join(lines)


DEMO_SECRET = "demo-webhook-secret"
EMAILED = ("paul",)  # the users with an email address: their notifications are emailed too
EXAMPLE_RECEIVER = "http://127.0.0.1:8765/policy-events"  # in publication_notice.yaml


def demo_settings(smtp_env: dict[str, str]) -> Settings:
    """The environment's settings, with a fresh embedded database unless one was named,
    webhooks allowed to the local receiver and email sent to the local SMTP receiver."""
    env = {**os.environ, **smtp_env}
    if not env.get("GOV_PIPELINE_DATABASE_URL"):
        home = load_settings(env).home / "demo"
        shutil.rmtree(home, ignore_errors=True)
        env["GOV_PIPELINE_HOME"] = str(home)
    env["GOV_PIPELINE_WEBHOOK_ALLOWED_HOSTS"] = "127.0.0.1"
    env["GOV_PIPELINE_WEBHOOK_SECRET"] = DEMO_SECRET
    return load_settings(env)


def main() -> None:
    parser = argparse.ArgumentParser(description="gov_pipeline end to end on the embedded default")
    parser.add_argument("--sync", action="store_true", help="process here, without Dagster")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="    log: %(levelname)s %(message)s")
    with smtp_receiver() as inbox:
        _demo(args.sync, inbox)


def _demo(sync: bool, inbox: Inbox) -> None:
    settings = demo_settings(inbox.env())
    engine = engine_for(settings)
    sessions = make_sessionmaker(engine, tenant=ALL_TENANTS, queue_emails=True)
    step = _numbered_steps()
    redis_prefix = _reachable_redis_prefix(settings) if not sync else None
    dagster_home = embedded_dagster_home(settings, redis_prefix)
    env = dagster_env(
        settings,
        dagster_home,
        {
            "GOV_PIPELINE_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
            "GOV_PIPELINE_WEBHOOK_SECRET": DEMO_SECRET,
            **inbox.env(),
        },
    )
    started = time.monotonic()
    try:
        _say(f"gov_pipeline demo on {engine.url.render_as_string(hide_password=True)}")
        _say(f"  a local SMTP receiver on {inbox.host}:{inbox.port} gets the emails")
        received = _run_story(
            sessions, settings, sync, env, dagster_home, redis_prefix, step, inbox
        )
        _report(sessions, received, inbox, None if sync else dagster_home)
        _say(f"\nDone in {time.monotonic() - started:.0f}s. Open the UI on the same data: make dev")
    finally:
        engine.dispose()
        if redis_prefix is not None:
            _forget_redis_demo(settings, dagster_home, redis_prefix)


def send_emails(
    sessions: sessionmaker[Session], settings: Settings, env: dict[str, str] | None,
    inbox: Inbox,
) -> None:  # fmt: skip
    """The email outbox sent: by a `deliver_emails` run (launched as `dagster job launch`
    launches it) or, with `env` None (--sync), here."""
    with sessions.begin() as session:
        by_status = dict(
            session.execute(
                select(EmailDelivery.status, func.count()).group_by(EmailDelivery.status)
            ).all()
        )
    queued, waiting = sum(by_status.values()), by_status.get("pending", 0)
    if env is None:
        assert settings.smtp is not None  # demo_settings gives it
        send_pending(sessions, settings.smtp)
        _say(f"  sent {waiting} queued email(s) here")
    else:
        launch_job(env, "deliver_emails")
        # The daemon's deliver_emails_every_minute schedule may have sent some already.
        _say(f"  dagster job launch -j deliver_emails: a run on the notification lane sends "
             f"what is still queued ({waiting} of {queued} email(s))")  # fmt: skip
    got = inbox.wait_for(queued, timeout_s=120)
    for mail in got:
        _say(f"    received: to {mail.to}, subject '{mail.subject}'")


def _numbered_steps() -> Callable[[str], None]:
    """A printer of the story's headings, numbered from 1."""
    numbers = iter(range(1, 100))

    def step(title: str) -> None:
        _say(f"\n{next(numbers)}. {title}")

    return step


def _run_story(
    sessions: sessionmaker[Session],
    settings: Settings,
    sync: bool,
    env: dict[str, str],
    dagster_home: Path,
    redis_prefix: str | None,
    step: Callable[[str], None],
    inbox: Inbox,
) -> Received:
    """Set up, start the Dagster processes (unless `sync`) and tell the story; returns what
    the local webhook receiver got."""
    step("Schema, tenant, people and the example workflows")
    upgrade(settings.database_url)
    demo = Demo(sessions, settings, sync)
    with ExitStack() as stack:
        receiver_url, received = stack.enter_context(
            webhook_receiver(DEMO_SECRET, path="/policy-events")
        )
        setup(sessions, receiver_url, settings.webhook_secret)
        if not sync:
            _say(f"  starting dagster-daemon (DAGSTER_HOME={dagster_home})")
            stack.enter_context(running_daemon(env, settings.home / "daemon.log"))
            if redis_prefix is not None:
                _say(f"  Redis at {settings.redis_url}: runs go through the Redis run "
                     "coordinator and a gov-pipeline worker (--mode execute)")  # fmt: skip
                stack.enter_context(running_worker(env, settings.home / "worker.log"))
        story(demo, step)
        step("Paul's notifications are emailed too (the notification lane)")
        send_emails(sessions, settings, None if sync else env, inbox)
        if not sync:
            wait_for_runs_to_end(dagster_home)
    return received


def _report(
    sessions: sessionmaker[Session], received: Received, inbox: Inbox, dagster_home: Path | None
) -> None:
    """Print the summary, the webhooks and emails received and (with `dagster_home`) the
    Dagster runs."""
    _say(summary(sessions))
    _say(
        f"webhooks:      {len(received.bodies)} delivered to the local receiver, "
        f"signatures checked ({received.bad_signatures} bad)"
    )
    _say(f"emails:        {len(inbox.received())} received by the local SMTP receiver")
    if dagster_home is None:
        return
    runs = dagster_runs(dagster_home)
    statuses = Counter(status for _, _, status, _ in runs)
    lanes = Counter(lane for _, _, _, lane in runs)
    _say(
        f"dagster runs:  {len(runs)} ("
        + ", ".join(f"{k} {v}" for k, v in sorted(statuses.items()))
        + "; by lane: "
        + ", ".join(f"{k} {v}" for k, v in sorted(lanes.items()))
        + ")"
    )
    for run_id, job, status, lane in runs:
        _say(f"               {run_id}  {job}  {status}  lane {lane}")


def _forget_redis_demo(settings: Settings, dagster_home: Path, prefix: str) -> None:
    """Back to Dagster's own queue (make dev has no worker), and the demo's keys removed."""
    from gov_pipeline.coordinator.queue import delete_queue
    from gov_pipeline.embedded.instance import EMBEDDED_INSTANCE_YAML

    (dagster_home / "dagster.yaml").write_text(EMBEDDED_INSTANCE_YAML)
    delete_queue(settings.redis_url, prefix)


if __name__ == "__main__":
    main()
