"""End to end with real Dagster processes: dagster-daemon (sensor, queue, launcher),
`dagster job launch`, and the production instance config on PostgreSQL."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from gov_pipeline.config import load_settings
from gov_pipeline.db.engine import make_engine, make_sessionmaker
from gov_pipeline.db.integrity import ALL_TENANTS, APP_ROLE
from gov_pipeline.db.migrate import upgrade
from gov_pipeline.db.models import EntityChange, Policy, ProcessedChange, WorkflowExecution
from gov_pipeline.embedded.instance import ROOT, dagster_env, embedded_dagster_home
from gov_pipeline.embedded.processes import bin_path, running_daemon
from gov_pipeline.embedded.ui_tour import Browser, webserver_up
from gov_pipeline.services import policies, tenants
from gov_pipeline_tests.integration.engine_support import apply_yaml

pytestmark = pytest.mark.e2e

NOTICE = """
name: review notice
tenant_id: acme
type: notification
trigger: on_status_change
conditions: {field: new.status, op: changed_to, value: in_review}
actions: [{type: notify, include_owner: true, title: "Review {entity.title}"}]
"""


def _wait(predicate, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """`make demo` once for the module: its output and its GOV_PIPELINE_HOME."""
    home = tmp_path_factory.mktemp("demo") / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOV_PIPELINE_", "DAGSTER_"))}
    env["GOV_PIPELINE_HOME"] = str(home)
    done = subprocess.run(
        ["make", "demo"], cwd=ROOT, env=env,  # the README's command, as written
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    log = home / "demo" / "daemon.log"
    assert done.returncode == 0, (
        done.stdout[-3000:]
        + done.stderr[-3000:]
        + (log.read_text()[-3000:] if log.exists() else "")
    )
    return done.stdout, home / "demo"


def test_make_demo_goes_through_the_sensor_and_real_runs(demo: tuple[str, Path]) -> None:
    out, _ = demo
    assert "the sensor and its runs processed them" in out
    assert "1 Access control: published" in out and "3 Cryptography standard: draft" in out
    assert "approvals:     approved 4, changes_requested 1, rejected 1, skipped 2" in out
    # One escalation with reassignment, and emails sent by a deliver_emails run.
    assert "reassigned to the CISO and escalated" in out
    assert "5 Cloud vendor security: approved" in out
    assert "dagster job launch -j deliver_emails: a run on the notification lane" in out
    assert "emails:        4 received by the local SMTP receiver" in out
    emails = [line for line in out.splitlines() if "deliver_emails" in line and "lane" in line]
    assert any(line.endswith("SUCCESS  lane notification") for line in emails)
    # The risk's acceptance, decided by one INSERT, ran on the assessment lane.
    assert "risks:         1 Cloud provider outage: accepted (score 20)" in out
    assessment = [line for line in out.splitlines() if line.endswith("lane assessment")]
    assert len(assessment) >= 2 and all("process_changes  SUCCESS" in line for line in assessment)
    assert "1 delivered to the local receiver, signatures checked (0 bad)" in out
    runs_line = next(line for line in out.splitlines() if line.startswith("dagster runs:"))
    assert "SUCCESS" in runs_line and "FAILURE" not in runs_line


ARTIFACTS = ROOT / "test-artifacts" / "browser"


def test_the_ui_shows_the_demo_runs_tags_metadata_and_sensor_ticks(
    demo: tuple[str, Path], tmp_path: Path
) -> None:
    """The Dagster UI in a real (headless) browser, on the demo's data."""
    import socket

    from dagster import DagsterInstance

    _, demo_home = demo
    dagster_home = demo_home / "dagster"
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        runs = [
            r
            for r in instance.get_runs()
            if r.job_name == "process_changes" and r.status.value == "SUCCESS"
        ]
    assert runs
    run = runs[0]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "GOV_PIPELINE_HOME": str(demo_home)}
    web = subprocess.Popen(
        [bin_path("dagster-webserver"), "-w", str(ROOT / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)],
        cwd=ROOT, env=env, start_new_session=True, stdout=(tmp_path / "web.log").open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        _wait(lambda: webserver_up(base), 120, "the webserver")
        browser = Browser(tmp_path / "profile")
        entity = f"gov/entity: {run.tags['gov/entity']}"
        runs_page = browser.text_showing(
            f"{base}/runs", [run.run_id[:8], entity], "runs", screenshot=ARTIFACTS / "runs.png"
        )
        assert "process_changes" in runs_page and run.run_id[:8] in runs_page
        assert entity in runs_page
        shown = ("load_changes", "match_workflows", "execute_actions", "record_outcome",
                 "workflows_matched", "actions_run", "executions_by_status", "RUN_SUCCESS")  # fmt: skip
        run_page = browser.text_showing(
            f"{base}/runs/{run.run_id}", shown, "run", screenshot=ARTIFACTS / "run.png"
        )
        for each in shown:
            assert each in run_page, each
        assert "Join the Dagster community" not in run_page  # nux is off: no dialog over it
        sensor_page = browser.text_showing(
            f"{base}/locations/gov_pipeline/sensors/entity_change_sensor",
            ["Latest tick", "run requested"], "sensor", screenshot=ARTIFACTS / "sensor.png",
        )  # fmt: skip
        assert "Latest tick" in sensor_page and "run requested" in sensor_page
        assert all(
            (ARTIFACTS / name).stat().st_size > 10_000
            for name in ("runs.png", "run.png", "sensor.png")
        )
    finally:
        os.killpg(web.pid, 15)
        web.wait(timeout=30)


def test_job_launch_and_an_import_burst_through_the_daemon(tmp_path: Path) -> None:
    """`dagster job launch` goes through the instance's coordinator; an import burst is
    absorbed by the sensor's batching; every change is processed."""
    home = tmp_path / "home"
    settings = load_settings({"GOV_PIPELINE_HOME": str(home)})
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    sessions = make_sessionmaker(engine, tenant=ALL_TENANTS)
    with sessions.begin() as session:
        tenants.create_tenant(session, tenant_id="acme")
        pid = policies.create_policy(
            session,
            tenant_id="acme",
            fields={"title": "Access", "policy_type": "Security", "owner_id": "olivia"},
        ).id
    apply_yaml(sessions, NOTICE)
    csv_path = tmp_path / "burst.csv"
    csv_path.write_text(
        "title,policy_type,owner_id\n"
        + "".join(f"Imported {i},Security,olivia\n" for i in range(120))
    )
    dagster_home = embedded_dagster_home(settings)
    env = dagster_env(
        settings,
        dagster_home,
        {"GOV_PIPELINE_BATCH_THRESHOLD": "20", "GOV_PIPELINE_BATCH_SIZE": "50"},
    )
    try:
        with running_daemon(env, home / "daemon.log"):
            for job, config in (
                (
                    "execute_workflow",
                    {
                        "ops": {
                            "run_workflow": {
                                "config": {
                                    "tenant_id": "acme",
                                    "workflow": "review notice",
                                    "entity_id": pid,
                                }
                            }
                        }
                    },
                ),
                (
                    "import_records",
                    {
                        "ops": {
                            "import_file": {
                                "config": {
                                    "path": str(csv_path),
                                    "tenant_id": "acme",
                                    "chunk_size": 50,
                                }
                            }
                        }
                    },
                ),
            ):
                launched = subprocess.run(
                    [bin_path("dagster"), "job", "launch", "-w", str(ROOT / "workspace.yaml"), "-j", job, "--config-json", json.dumps(config)],
                    cwd=ROOT, env=env, capture_output=True, text=True, timeout=180,
                )  # fmt: skip
                assert launched.returncode == 0, launched.stderr[-2000:]

            def all_processed() -> bool:
                with sessions.begin() as session:
                    total = session.scalar(select(func.count()).select_from(EntityChange))
                    done = session.scalar(select(func.count()).select_from(ProcessedChange))
                    return bool(total and total >= 121 and done == total)

            _wait(all_processed, 240, "every change to be processed")
            # A run may still be queued whose changes another run's catch-up already took.
            from dagster import DagsterInstance as _Instance

            with _Instance.from_config(str(dagster_home)) as watcher:
                ended = {"SUCCESS", "FAILURE", "CANCELED"}
                _wait(
                    lambda: {r.status.value for r in watcher.get_runs(limit=500)} <= ended,
                    240,
                    "every run to end",
                )
    finally:
        engine.dispose()
    with sessions.begin() as session:
        assert session.scalar(select(func.count()).select_from(Policy)) == 121
        manual = session.scalars(
            select(WorkflowExecution).where(WorkflowExecution.dedupe_key.like("manual:%"))
        ).one()
        assert manual.status == "skipped" and "changed_to 'in_review'" in (
            manual.status_reason or ""
        )
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    from dagster import DagsterInstance

    with DagsterInstance.get() as instance:
        runs = instance.get_runs(limit=500)
        processing = [r for r in runs if r.job_name == "process_changes"]
        assert {r.status.value for r in runs} == {"SUCCESS"}
        # 121 created changes, batched: far fewer runs than changes, each batch <= 50.
        sizes = [int(r.tags["gov/changes"]) for r in processing]
        assert sum(sizes) >= 121 and len(processing) < 40 and max(sizes) <= 50
        assert all(r.tags["gov/queue"] == "policy" for r in processing)


def test_the_production_instance_config_works_on_postgres(
    postgres_url: str, tmp_path: Path
) -> None:
    """The top-level dagster.yaml, with its secrets from the environment, on a fresh database."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    url = make_url(postgres_url)
    name = f"{url.database}_prodcfg"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_USER": url.username or "postgres",
        "DAGSTER_PG_PASSWORD": url.password or "",
        "DAGSTER_PG_HOST": url.host or "127.0.0.1",
        "DAGSTER_PG_DB": name,
        "DAGSTER_PG_PORT": str(url.port or 5432),
        "GOV_PIPELINE_DATABASE_URL": postgres_url,
        "GOV_PIPELINE_REDIS_URL": os.environ.get("GOV_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
    }
    script = (
        "from dagster import DagsterInstance\n"
        "from gov_pipeline.definitions import defs\n"
        "with DagsterInstance.get() as i:\n"
        "    job = defs.resolve_job_def('deliver_notifications')\n"
        "    r = job.execute_in_process(instance=i)\n"
        "    print(type(i.run_storage).__name__, type(i.run_coordinator).__name__, r.success, len(i.get_runs()))\n"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=180
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.split() == ["PostgresRunStorage", "RedisRunCoordinator", "True", "1"]
        with create_engine(make_url(postgres_url).set(database=name)).connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM runs")).scalar_one() == 1
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_sensor_and_webserver_runs_go_through_the_redis_coordinator(
    tmp_path: Path, postgres_url: str, dagster_storage_url: str, redis_prefix: str
) -> None:
    """dagster-daemon (sensor) + gov-pipeline worker + dagster-webserver (launchRun), with
    the Redis run coordinator and PostgreSQL storage."""
    import socket
    import urllib.request

    from gov_pipeline.services.policies import transition_status
    from gov_pipeline_tests.conftest import REDIS_URL, _truncate_all
    from gov_pipeline_tests.integration.coordinator_support import coordinated_instance

    _truncate_all(postgres_url)
    with coordinated_instance(
        tmp_path, postgres_url, dagster_storage_url, REDIS_URL, redis_prefix
    ) as c:
        engine = make_engine(postgres_url, role=APP_ROLE)
        sessions = make_sessionmaker(engine, tenant=ALL_TENANTS)
        apply_yaml(sessions, NOTICE)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        logs = tmp_path / "logs"
        logs.mkdir()
        worker = subprocess.Popen(
            [bin_path("gov-pipeline"), "worker", "--mode", "execute", "--concurrency", "2"],
            env=c.env, start_new_session=True, stdout=(logs / "worker.log").open("wb"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        web = subprocess.Popen(
            [bin_path("dagster-webserver"), "-w", str(ROOT / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)],
            env=c.env, cwd=ROOT, start_new_session=True, stdout=(logs / "web.log").open("wb"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            with running_daemon(c.env, logs / "daemon.log"):
                # 1. The sensor: a status change becomes a run, queued in Redis, run by the worker.
                with sessions.begin() as session:
                    transition_status(
                        session, tenant_id="acme", policy_id=c.policy_id, to_status="in_review"
                    )

                def processed() -> bool:
                    with sessions.begin() as session:
                        total = session.scalar(select(func.count()).select_from(EntityChange))
                        done = session.scalar(select(func.count()).select_from(ProcessedChange))
                        return bool(total and done == total)

                _wait(processed, 180, "the sensor's runs")
                # A run may still be queued whose change another run's catch-up took.
                _wait(
                    lambda: all(
                        r.status.value in ("SUCCESS", "FAILURE", "CANCELED")
                        for r in c.instance.get_runs()
                    ),
                    180,
                    "the sensor's runs to end",
                )
                sensor_runs = [r for r in c.instance.get_runs() if r.job_name == "process_changes"]
                assert sensor_runs and {r.status.value for r in sensor_runs} == {"SUCCESS"}
                # The worker writes a run's outcome to Redis just after the run's last event.
                _wait(
                    lambda: all(
                        c.instance.run_coordinator.queue.record(r.run_id).get("outcome")
                        == "SUCCESS"
                        for r in sensor_runs
                    ),
                    30,
                    "the runs' outcomes in Redis",
                )

                # 2. The webserver's launchRun mutation: same coordinator, same worker.
                def server_up() -> bool:
                    try:
                        with urllib.request.urlopen(
                            f"http://127.0.0.1:{port}/server_info", timeout=2
                        ) as r:
                            return r.status == 200
                    except OSError:
                        return False

                _wait(server_up, 120, "the webserver")
                query = (
                    "mutation($p: ExecutionParams!) { launchRun(executionParams: $p) { __typename "
                    "... on LaunchRunSuccess { run { runId status } } ... on PythonError { message } } }"
                )
                params = {
                    "selector": {
                        "repositoryLocationName": "gov_pipeline",
                        "repositoryName": "__repository__",
                        "jobName": "execute_workflow",
                    },
                    "runConfigData": c.config(),
                }
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/graphql",
                    data=json.dumps({"query": query, "variables": {"p": params}}).encode(),
                    headers={"Content-Type": "application/json"},
                )
                with urllib.request.urlopen(request, timeout=60) as response:
                    answer = json.loads(response.read())["data"]["launchRun"]
                assert answer["__typename"] == "LaunchRunSuccess", answer
                run_id = answer["run"]["runId"]
                assert answer["run"]["status"] in ("QUEUED", "STARTING", "STARTED", "SUCCESS")
                _wait(
                    lambda: c.instance.get_run_by_id(run_id).status.value == "SUCCESS",
                    120,
                    "the launched run",
                )  # type: ignore[union-attr]
                # The worker writes the outcome to Redis just after the run's last event.
                _wait(
                    lambda: (
                        c.instance.run_coordinator.queue.record(run_id).get("outcome") == "SUCCESS"
                    ),
                    30,
                    "the run's outcome in Redis",
                )
        finally:
            for process in (worker, web):
                if process.poll() is None:
                    os.killpg(process.pid, 15)
                    try:
                        process.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        os.killpg(process.pid, 9)
            engine.dispose()
