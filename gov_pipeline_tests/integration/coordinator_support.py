"""A Dagster instance (PostgreSQL storage) with the Redis run coordinator, and run submission
the way `dagster job launch` does it (through the instance and the coordinator)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dagster import DagsterInstance

from gov_pipeline.config import load_settings
from gov_pipeline.coordinator.worker import Worker
from gov_pipeline.dagster_internals import WorkspaceFileTarget, WorkspaceProcessContext
from gov_pipeline.db.engine import make_engine, make_sessionmaker
from gov_pipeline.db.integrity import ALL_TENANTS, APP_ROLE
from gov_pipeline.embedded.instance import WORKSPACE
from gov_pipeline.services import policies, tenants
from gov_pipeline_tests.integration.engine_support import apply_yaml

WORKFLOW = """
name: review notice
tenant_id: acme
type: notification
trigger: manual
actions: [{type: notify, include_owner: true, title: "Review {entity.title}"}]
"""


def instance_yaml(storage_url: str, redis_url: str, prefix: str, **coordinator: Any) -> str:
    import json

    config = {"redis_url": redis_url, "key_prefix": prefix, "lease_seconds": 3, **coordinator}
    return (
        f"storage:\n  postgres:\n    postgres_url: {storage_url}\n"
        "instance_class:\n  module: gov_pipeline.coordinator.instance\n  class: GovDagsterInstance\n"
        "run_coordinator:\n  module: gov_pipeline.coordinator.run_coordinator\n"
        f"  class: RedisRunCoordinator\n  config: {json.dumps(config)}\n"
        "run_launcher:\n  module: dagster\n  class: DefaultRunLauncher\n"
        "telemetry:\n  enabled: false\n"
    )


@dataclass
class Coordinated:
    instance: DagsterInstance
    home: Path
    env: dict[str, str]
    policy_id: int

    def config(self, policy_id: int | None = None) -> dict[str, Any]:
        return {"ops": {"run_workflow": {"config": {
            "tenant_id": "acme", "workflow": "review notice", "entity_id": policy_id or self.policy_id,
        }}}}  # fmt: skip

    @contextmanager
    def workspace(self) -> Iterator[Any]:
        with WorkspaceProcessContext(
            self.instance, WorkspaceFileTarget(paths=[str(WORKSPACE)])
        ) as ctx:
            yield ctx

    def submit(self, jobs: Sequence[tuple[str, Mapping[str, Any], Mapping[str, str]]]) -> list[str]:
        """Create and submit runs as `dagster job launch` does; returns their ids in order."""
        from dagster._cli.job import _create_run

        ids = []
        with self.workspace() as ctx:
            request = ctx.create_request_context()
            location = request.get_code_location("gov_pipeline")
            repo = next(iter(location.get_repositories().values()))
            for job_name, run_config, tags in jobs:
                run = _create_run(
                    instance=self.instance, code_location=location, remote_repo=repo,
                    remote_job=repo.get_full_job(job_name), run_config=run_config,
                    tags=dict(tags), op_selection=None, run_id=None,
                )  # fmt: skip
                self.instance.submit_run(run.run_id, request)
                ids.append(run.run_id)
        return ids

    def worker(self, **kwargs: Any) -> Worker:
        kwargs.setdefault("workspace", WORKSPACE)
        kwargs.setdefault("burst", True)
        kwargs.setdefault("poll_s", 0.05)
        return Worker(self.instance, **kwargs)

    def run_workers(self, workers: Sequence[Worker]) -> None:
        threads = [
            threading.Thread(target=w.run, kwargs={"install_signals": False}) for w in workers
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)


@contextmanager
def coordinated_instance(
    tmp_path: Path, app_url: str, storage_url: str, redis_url: str, prefix: str, **coordinator: Any
) -> Iterator[Coordinated]:
    """A fresh DAGSTER_HOME on PostgreSQL storage (wiped) with the Redis coordinator, and the
    app database holding one tenant, one manual workflow and one policy."""
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text(instance_yaml(storage_url, redis_url, prefix, **coordinator))
    env = {
        **os.environ, "DAGSTER_HOME": str(home), "GOV_PIPELINE_DATABASE_URL": app_url,
        "GOV_PIPELINE_HOME": str(tmp_path / "home"),
    }  # fmt: skip
    saved = {k: os.environ.get(k) for k in ("DAGSTER_HOME", "GOV_PIPELINE_DATABASE_URL")}
    os.environ.update({k: env[k] for k in saved})
    engine = make_engine(app_url, role=APP_ROLE)
    sessions = make_sessionmaker(engine, tenant=ALL_TENANTS)
    load_settings()
    with sessions.begin() as session:
        tenants.create_tenant(session, tenant_id="acme")
        pid = policies.create_policy(
            session,
            tenant_id="acme",
            fields={"title": "Access", "policy_type": "S", "owner_id": "olivia"},
        ).id
    apply_yaml(sessions, WORKFLOW)
    engine.dispose()
    instance = DagsterInstance.from_config(str(home))
    instance.wipe()
    # Sensor cursors and ticks too: the app database starts again at change id 1, and a
    # cursor left by an earlier test would skip every change up to its watermark.
    instance.schedule_storage.wipe()  # type: ignore[union-attr]
    try:
        yield Coordinated(instance, home, env, pid)
    finally:
        instance.dispose()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def statuses(c: Coordinated, ids: Sequence[str]) -> list[str]:
    """The Dagster status of each run."""
    return [c.instance.get_run_by_id(i).status.value for i in ids]  # type: ignore[union-attr]


def wait_for(
    predicate: Callable[[], object], timeout_s: float = 60, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def slow_import(
    c: Coordinated, tmp_path: Path, rows: int = 40_000
) -> tuple[str, dict[str, Any], dict[str, str]]:
    """An `import_records` run of `rows` policies: a run that takes a while."""
    path = tmp_path / "big.csv"
    path.write_text("title,policy_type\n" + "".join(f"P{i},S\n" for i in range(rows)))
    config = {
        "ops": {
            "import_file": {"config": {"path": str(path), "tenant_id": "acme", "chunk_size": 500}}
        }
    }
    return ("import_records", config, {})
