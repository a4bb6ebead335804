"""Helpers for engine tests: settings, applying YAML, processing, counting, a webhook server."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import yaml
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from gov_pipeline.config import Settings, load_settings
from gov_pipeline.db.engine import is_postgres, make_sessionmaker
from gov_pipeline.db.integrity import ALL_TENANTS
from gov_pipeline.domain.definitions import parse_definition
from gov_pipeline.domain.retry import RetryPolicy
from gov_pipeline.embedded.webhook_receiver import Received, webhook_receiver
from gov_pipeline.runners.sync import ProcessStats, process_pending
from gov_pipeline.services import policies
from gov_pipeline.services.workflows import COMPILED, apply_definition

NO_WAIT = RetryPolicy(max_attempts=3, delay_s=0.0)
TEST_WEBHOOK_SECRET = "test-secret"  # GOV_PIPELINE_WEBHOOK_SECRET of make_settings


def make_settings(db_url: str, **env: str) -> Settings:
    COMPILED.clear()  # ids restart in every test database
    return load_settings(
        {
            "GOV_PIPELINE_DATABASE_URL": db_url,
            "GOV_PIPELINE_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
            "GOV_PIPELINE_WEBHOOK_RETRY_DELAY": "0.01",
            "GOV_PIPELINE_WEBHOOK_SECRET": TEST_WEBHOOK_SECRET,
            **env,
        }
    )


def apply_yaml(
    sessions: sessionmaker[Session],
    text: str,
    *,
    webhook_secret: str | None = TEST_WEBHOOK_SECRET,
    **overrides: Any,
) -> None:
    """Apply a YAML definition (`overrides` replace its keys) as `workflows apply` does where
    GOV_PIPELINE_WEBHOOK_SECRET is `webhook_secret`."""
    data = yaml.safe_load(text)
    data.update(overrides)
    with sessions.begin() as session:
        apply_definition(session, parse_definition(data), webhook_secret=webhook_secret)


def process(
    sessions: sessionmaker[Session], settings: Settings, consumer: str = "sync"
) -> ProcessStats:
    return process_pending(
        sessions, settings, consumer=consumer, retry=NO_WAIT, sleep=lambda s: None
    )


def new_policy(sessions: sessionmaker[Session], tenant: str = "acme", **fields: Any) -> int:
    values = {
        "title": "Access control",
        "policy_type": "Information Security",
        "owner_id": "olivia",
        **fields,
    }
    with sessions.begin() as session:
        # A policy created in another status than draft is loaded as an import would.
        return policies.create_policy(
            session, tenant_id=tenant, fields=values, importing="status" in fields
        ).id


def move(sessions: sessionmaker[Session], pid: int, status: str, tenant: str = "acme") -> None:
    with sessions.begin() as session:
        policies.transition_status(
            session,
            tenant_id=tenant,
            policy_id=pid,
            to_status=status,
            actor=policies.Actor("alice"),
        )


def policy_status(sessions: sessionmaker[Session], pid: int) -> str:
    """The policy's status now."""
    from gov_pipeline.db.models import Policy

    with sessions.begin() as session:
        policy = session.get(Policy, pid)
        assert policy is not None
        return policy.status


def count(sessions: sessionmaker[Session], model: type[Any], *where: Any) -> int:
    with sessions.begin() as session:
        return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


@contextmanager
def webhook_server(
    statuses: list[int], secret: str = TEST_WEBHOOK_SECRET
) -> Iterator[tuple[str, Received]]:
    """The package's receiver, with the tests' secret."""
    with webhook_receiver(secret, tuple(statuses)) as served:
        yield served


EXAMPLES_DIR = __import__("pathlib").Path(__file__).resolve().parents[2] / "examples" / "workflows"
APPROVAL_EXAMPLE = (EXAMPLES_DIR / "policy_approval.yaml").read_text()


def start_example_approval(
    sessions: sessionmaker[Session],
    settings: Settings,
    extra_users: tuple[tuple[str, str, str], ...] = (),
) -> int:
    """The example two-step sequential approval, started on one new policy (owner olivia;
    carol is the compliance officer, ciso the admin). Returns the policy id."""
    from gov_pipeline.services.tenants import upsert_user

    people = (("acme", "carol", "compliance_officer"), ("acme", "ciso", "admin"),
              ("acme", "olivia", "policy_owner"), *extra_users)  # fmt: skip
    with sessions.begin() as session:
        for tenant_id, user_id, role in people:
            upsert_user(session, tenant_id=tenant_id, user_id=user_id, roles=[role])
    apply_yaml(sessions, APPROVAL_EXAMPLE)
    pid = new_policy(sessions)
    move(sessions, pid, "in_review")
    process(sessions, settings)
    return pid


def cli_invoker(capsys: Any) -> Any:
    """Call the CLI's entry point in process: returns (exit code, stdout, stderr)."""
    from gov_pipeline.cli import main

    def invoke(*args: str) -> tuple[int, str, str]:
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


def restore_to_before(engine: Engine, change_id: int) -> None:
    """What restoring the application database to a point before `change_id` was written
    does to the change table: that change and the later ones are gone (with their processed
    markers), and their ids are handed out again. `engine`: the database owner's (a restore
    is an administrator's work)."""
    with make_sessionmaker(engine, tenant=ALL_TENANTS).begin() as session:
        session.execute(
            text("DELETE FROM processed_changes WHERE change_id >= :i"), {"i": change_id}
        )
        session.execute(text("DELETE FROM entity_changes WHERE id >= :i"), {"i": change_id})
        if is_postgres(session):
            session.execute(text(f"ALTER SEQUENCE entity_changes_id_seq RESTART WITH {change_id}"))
        else:
            session.execute(
                text("UPDATE sqlite_sequence SET seq = :i WHERE name = 'entity_changes'"),
                {"i": change_id - 1},
            )


@contextmanager
def another_application(db_url: str, tenant: str = "acme") -> Iterator[Engine]:
    """An engine logged in as a login role of another application: a member of gov_writer,
    granted `tenant` in gov_tenant_grants, as an operator would set it up
    (docs/operations.md); the role is dropped afterwards (PostgreSQL only)."""
    import uuid

    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    from gov_pipeline.db.integrity import WRITER_ROLE

    role = f"gov_test_app_{uuid.uuid4().hex[:8]}"
    owner = create_engine(db_url, isolation_level="AUTOCOMMIT")
    with owner.connect() as conn:
        conn.execute(text(f"CREATE ROLE {role} LOGIN IN ROLE {WRITER_ROLE}"))
        conn.execute(
            text("INSERT INTO gov_tenant_grants VALUES (:r, :t)"), {"r": role, "t": tenant}
        )
    engine = create_engine(make_url(db_url).set(username=role, password=None))
    try:
        yield engine
    finally:
        engine.dispose()
        with owner.connect() as conn:
            conn.execute(text("DELETE FROM gov_tenant_grants WHERE role_name = :r"), {"r": role})
            conn.execute(text(f"DROP OWNED BY {role}"))
            conn.execute(text(f"DROP ROLE {role}"))
        owner.dispose()
