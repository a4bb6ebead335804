"""Secrets never leave the process that uses them: with a webhook secret and a database
password set to sentinel values, the sync path, Dagster runs (tags, run config, event log)
and the CLI with --debug show neither, in logs, output or stored rows."""

from __future__ import annotations

import logging
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import make_url

from gov_pipeline.config import load_settings
from gov_pipeline.db.engine import make_engine, make_sessionmaker
from gov_pipeline.db.integrity import ALL_TENANTS
from gov_pipeline.db.models import Base, EntityChange, WebhookDelivery
from gov_pipeline.orchestration.manual import execute_workflow
from gov_pipeline.orchestration.processing import process_changes
from gov_pipeline.orchestration.resources import DatabaseResource
from gov_pipeline.orchestration.scheduled import deliver_notifications
from gov_pipeline.services.tenants import create_tenant, upsert_user
from gov_pipeline_tests.conftest import _truncate_all
from gov_pipeline_tests.integration.engine_support import (
    apply_yaml,
    cli_invoker,
    make_settings,
    move,
    new_policy,
    process,
    webhook_server,
)

HOOK_SECRET = "hook-sentinel-7f3a91e5"
DB_PASSWORD = "db-sentinel-c41e02b8"
SENTINELS = (HOOK_SECRET, DB_PASSWORD)

WORKFLOW = """
name: signed notice
tenant_id: acme
type: notification
trigger: on_status_change
owner_id: wanda
conditions: {field: new.status, op: changed_to, value: in_review}
actions:
  - {type: notify, include_owner: true, title: "Review {entity.title}"}
  - {type: webhook, url: "URL", max_attempts: 2}
"""

MANUAL = """
name: by hand
tenant_id: acme
type: notification
trigger: manual
actions: [{type: webhook, url: "URL", max_attempts: 1}]
"""


def _assert_hidden(where: str, text_: str) -> None:
    for sentinel in SENTINELS:
        assert sentinel not in text_, f"{sentinel} shown in {where}"


def test_secrets_appear_in_no_log_run_tag_run_config_event_or_row(
    postgres_url: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    # PostgreSQL on this machine trusts loopback: the password is sent nowhere it matters,
    # but it is part of the URL every component is given.
    _truncate_all(postgres_url)
    url = make_url(postgres_url).set(password=DB_PASSWORD).render_as_string(hide_password=False)
    assert DB_PASSWORD in url
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("GOV_PIPELINE_DATABASE_URL", url)
    monkeypatch.setenv("GOV_PIPELINE_WEBHOOK_SECRET", HOOK_SECRET)
    monkeypatch.setenv("GOV_PIPELINE_WEBHOOK_ALLOWED_HOSTS", "127.0.0.1")
    monkeypatch.setenv("GOV_PIPELINE_WEBHOOK_RETRY_DELAY", "0.01")
    monkeypatch.delenv("GOV_PIPELINE_TENANT", raising=False)
    make_settings(url)  # clears the compiled-definition cache
    settings = load_settings()
    engine = make_engine(settings.database_url)
    sessions = make_sessionmaker(engine, tenant=ALL_TENANTS)
    with sessions.begin() as session:
        create_tenant(session, tenant_id="acme")
        upsert_user(session, tenant_id="acme", user_id="wanda", roles=["admin"])

    with webhook_server([500, 200], secret=HOOK_SECRET) as (hook_url, received):
        apply_yaml(sessions, WORKFLOW.replace("URL", hook_url))
        apply_yaml(sessions, MANUAL.replace("URL", hook_url))
        # 1. The sync path: a retried, signed delivery.
        move(sessions, new_policy(sessions), "in_review")
        process(sessions, settings)
        assert len(received.bodies) == 1 and received.bad_signatures == 0

        # 2. Dagster runs in process: the main job (one ok, one failing) and a manual run.
        move(sessions, new_policy(sessions, title="Second"), "in_review")
        with sessions.begin() as session:
            last = max(session.scalars(select(EntityChange.id)))
        with dg.instance_for_test() as instance:
            ok = process_changes.execute_in_process(
                run_config={"ops": {"load_changes": {"config": {"change_ids": [last]}}}},
                resources={"database": DatabaseResource()},
                instance=instance,
                tags={"gov/entity": "2"},
            )
            failed = process_changes.execute_in_process(
                run_config={"ops": {"load_changes": {"config": {"change_ids": [10_000]}}}},
                resources={"database": DatabaseResource()},
                instance=instance,
                raise_on_error=False,
            )
            manual = execute_workflow.execute_in_process(
                run_config={
                    "ops": {
                        "run_workflow": {
                            "config": {
                                "tenant_id": "acme",
                                "workflow": "by hand",
                                "entity_id": 1,
                            }
                        }
                    }
                },
                resources={"database": DatabaseResource()},
                instance=instance,
            )
            delivered = deliver_notifications.execute_in_process(
                resources={"database": DatabaseResource()}, instance=instance
            )
            assert ok.success and not failed.success and manual.success and delivered.success
            runs = instance.get_runs()
            assert len(runs) == 4
            for run in runs:
                _assert_hidden(f"run {run.run_id} tags", repr(run.tags))
                _assert_hidden(f"run {run.run_id} config", repr(run.run_config))
                _assert_hidden(f"run {run.run_id}", dg.serialize_value(run))
                logs = instance.all_logs(run.run_id)
                assert logs
                for entry in logs:
                    _assert_hidden(f"run {run.run_id} event", dg.serialize_value(entry))
        assert len(received.bodies) == 3 and received.bad_signatures == 0

    # 3. The CLI with --debug, when it works and when it fails (tracebacks included).
    run = cli_invoker(capsys)
    outputs = [
        run("--debug", "policies", "list", "-t", "acme", "--json"),
        run("--debug", "policies", "show", "999", "-t", "acme"),
        run("--debug", "executions", "list", "-t", "acme", "--json"),
        run("--debug", "process", "--sync"),
        run("--debug", "workflows", "list", "-t", "ghost"),
    ]
    gone = make_url(url).set(database="no_such_database_here").render_as_string(False)
    monkeypatch.setenv("GOV_PIPELINE_DATABASE_URL", gone)
    outputs.append(run("--debug", "policies", "list", "-t", "acme"))
    codes = [code for code, _, _ in outputs]
    assert codes == [0, 1, 0, 0, 1, 1]
    assert "Traceback" in outputs[-1][2] and "database unavailable" in outputs[-1][2]
    for _, out, err in outputs:
        _assert_hidden("CLI output", out + err)

    # 4. Logs, and every stored row.
    assert caplog.records, "nothing was logged at DEBUG?"
    _assert_hidden("logs", caplog.text)
    _assert_hidden("settings repr", repr(settings) + repr(engine))
    with engine.begin() as conn:
        for table in Base.metadata.sorted_tables:
            rows = conn.execute(text(f"SELECT * FROM {table.name}")).all()
            _assert_hidden(f"table {table.name}", repr(rows))
    with sessions.begin() as session:
        assert {d.status for d in session.scalars(select(WebhookDelivery))} == {"delivered"}
    engine.dispose()
