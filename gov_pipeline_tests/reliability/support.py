"""Fault injection with real processes: PostgreSQL, Redis, dagster-daemon and 1-3
`gov-pipeline worker` processes, bursts of policy changes, waiting until everything has
settled, the invariant checker, and the figures of each fault (written as JSON under
test-artifacts/reliability/ for docs/reliability.md)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from gov_pipeline.checks.runs import verify_with_runs
from gov_pipeline.checks.verify import VerifyReport, lost_and_duplicated
from gov_pipeline.db.engine import make_engine, make_sessionmaker
from gov_pipeline.db.integrity import ALL_TENANTS, APP_ROLE
from gov_pipeline.db.models import EntityChange, ProcessedChange, Workflow, WorkflowExecution
from gov_pipeline.embedded.instance import ROOT
from gov_pipeline.embedded.processes import running_daemon, running_worker
from gov_pipeline.services import policies
from gov_pipeline_tests.integration.coordinator_support import Coordinated, coordinated_instance
from gov_pipeline_tests.integration.engine_support import apply_yaml

RESULTS = ROOT / "test-artifacts" / "reliability"
ENDED = {"SUCCESS", "FAILURE", "CANCELED"}

# Every policy update runs this workflow: two effects per change (a notification, a task).
CHANGE_NOTICE = """
name: change notice
tenant_id: acme
type: notification
trigger: on_update
owner_id: wanda
actions:
  - {type: notify, include_owner: true, title: "Changed: {entity.title}"}
  - {type: create_task, title: "Look at {entity.title}", assignee: owner}
"""

# What the production dagster.yaml adds to the coordinated test instance: run retries.
RUN_RETRIES = """
run_retries:
  enabled: true
  max_retries: 2
  retry_on_asset_or_op_failure: false
sensors:
  use_threads: true
  num_workers: 2
  num_submit_workers: 2
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(
    predicate: Callable[[], bool], timeout_s: float, what: str, every: float = 0.5
) -> float:
    """Poll `predicate` until it holds; returns the seconds it took."""
    started = time.monotonic()
    deadline = started + timeout_s
    while True:
        try:
            if predicate():
                return time.monotonic() - started
        except Exception:  # a server being restarted: try again until the deadline
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(every)


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL a process and its children (its own process group), and reap it."""
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


@dataclass
class Stack:
    """A running stack: the coordinated Dagster instance, the app database, processes."""

    c: Coordinated
    app_url: str
    engine: Engine
    sessions: sessionmaker[Session]
    logs: Path
    env: dict[str, str]
    processes: ExitStack
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    daemon: subprocess.Popen[bytes] | None = None
    policy_ids: list[int] = field(default_factory=list)
    updates: int = 0
    started: float = field(default_factory=time.monotonic)

    # -- processes ---------------------------------------------------------------------

    def start_daemon(self) -> subprocess.Popen[bytes]:
        self.daemon = self.processes.enter_context(
            running_daemon(self.env, self.logs / "daemon.log")
        )
        return self.daemon

    def kill_daemon(self) -> None:
        assert self.daemon is not None
        kill_group(self.daemon)

    def start_worker(self, name: str) -> subprocess.Popen[bytes]:
        process = self.processes.enter_context(
            running_worker(self.env, self.logs / f"worker-{name}.log")
        )
        self.workers[name] = process
        return process

    def kill_worker(self, name: str) -> None:
        kill_group(self.workers[name])

    # -- data --------------------------------------------------------------------------

    def add_policies(self, n: int, title: str | None = None) -> list[int]:
        with self.sessions.begin() as session:
            ids = [
                policies.create_policy(
                    session, tenant_id="acme",
                    fields={"title": title or f"Policy {len(self.policy_ids) + i}",
                            "policy_type": "S", "owner_id": "olivia"},
                ).id
                for i in range(n)
            ]  # fmt: skip
        self.policy_ids += ids
        return ids

    def write_updates(
        self, n: int, per_transaction: int = 1, only: list[int] | None = None
    ) -> None:
        """`n` updates round-robin over the policies (or `only` these), committed
        `per_transaction` at a time."""
        targets = only or self.policy_ids
        done = 0
        while done < n:
            with self.sessions.begin() as session:
                for _ in range(min(per_transaction, n - done)):
                    pid = targets[(self.updates + done) % len(targets)]
                    policies.update_policy(
                        session, tenant_id="acme", policy_id=pid,
                        fields={"content": f"revision {self.updates + done}"},
                    )  # fmt: skip
                    done += 1
        self.updates += n

    # -- observing ---------------------------------------------------------------------

    def counts(self) -> tuple[int, int]:
        """(changes, processed)."""
        with self.sessions.begin() as session:
            changes = session.scalar(select(func.count()).select_from(EntityChange)) or 0
            done = session.scalar(select(func.count()).select_from(ProcessedChange)) or 0
        return int(changes), int(done)

    def run_statuses(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for run in self.c.instance.get_runs():
            out[run.status.value] = out.get(run.status.value, 0) + 1
        return out

    def running_runs(self) -> int:
        return self.run_statuses().get("STARTED", 0)

    def retries_due(self) -> int:
        """Failed runs that Dagster will retry but has not resubmitted yet (the run-retry
        daemon does it on its next pass, seconds after the failure)."""
        runs = self.c.instance.get_runs()
        parents = {r.tags.get("dagster/parent_run_id") for r in runs}
        return sum(
            1
            for r in runs
            if r.status.value == "FAILURE"
            and r.tags.get("dagster/will_retry") == "true"
            and r.run_id not in parents
        )

    def settled(self) -> bool:
        changes, done = self.counts()
        return (
            changes > 0
            and done == changes
            and set(self.run_statuses()) <= ENDED
            and self.retries_due() == 0
        )

    def wait_settled(self, timeout_s: float = 240) -> float:
        return wait_for(self.settled, timeout_s, "every change processed and every run ended")

    def updated_changes(self) -> int:
        """Changes the notice workflow matches (every change but a creation)."""
        with self.sessions.begin() as session:
            return int(
                session.scalar(
                    select(func.count())
                    .select_from(EntityChange)
                    .where(EntityChange.kind != "created")
                )
                or 0
            )

    def completed_notices(self) -> int:
        with self.sessions.begin() as session:
            return int(
                session.scalar(
                    select(func.count())
                    .select_from(WorkflowExecution)
                    .join(Workflow, Workflow.id == WorkflowExecution.workflow_id)
                    .where(
                        Workflow.name == "change notice", WorkflowExecution.status == "completed"
                    )
                )
                or 0
            )

    def check(self) -> VerifyReport:
        """The checker, once settled: every change was processed (`settled`), so the grace
        only spares runs being submitted right now (the daemon's periodic governance
        refresh, whose run is NOT_STARTED for the moment its submit takes)."""
        with self.sessions.begin() as session:
            return verify_with_runs(session, self.c.instance, grace_s=10, stuck_s=60)

    def log_tail(self, chars: int = 3000) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-chars:]}"
            for p in sorted(self.logs.glob("*.log"))
        )


def record(
    fault: str, test: str, stack: Stack, report: VerifyReport, recovery_s: float | None,
    **extra: Any,
) -> dict[str, Any]:  # fmt: skip
    """The figures of one fault, kept for docs/reliability.md."""
    lost, duplicated = lost_and_duplicated(report)
    figures = {
        "fault": fault, "test": test, "changes": report.figures["changes"],
        "updates": stack.updates, "executions": report.figures["executions"],
        "executions_by_status": report.figures["executions_by_status"],
        "runs_by_status": report.figures.get("runs_by_status", {}),
        "lost": lost, "duplicated": duplicated,
        "recovery_s": None if recovery_s is None else round(recovery_s, 1),
        "wall_s": round(time.monotonic() - stack.started, 1), **extra,
    }  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{test}.json").write_text(json.dumps(figures, indent=2, sort_keys=True))
    return figures


def assert_clean(stack: Stack, report: VerifyReport, expected_notices: int | None = None) -> None:
    """Zero violations, and (when given) every update ran the notice workflow to the end."""
    assert report.ok, report.summary() + "\n" + stack.log_tail()
    if expected_notices is not None:
        assert stack.completed_notices() == expected_notices, (
            report.figures,
            stack.log_tail(),
        )


@contextmanager
def running_stack(
    tmp_path: Path,
    app_url: str,
    storage_url: str,
    redis_url: str,
    prefix: str,
    *,
    workers: int = 1,
    policies_n: int = 10,
    daemon: bool = True,
    workflows: tuple[str, ...] = (CHANGE_NOTICE,),
    env: dict[str, str] | None = None,
) -> Iterator[Stack]:
    """The whole stack on a migrated, empty app database: the coordinated instance with run
    retries, `workflows` applied, `policies_n` policies, the daemon and `workers` workers.
    Every process is stopped on exit, even on failure."""
    with coordinated_instance(tmp_path, app_url, storage_url, redis_url, prefix) as c:
        home_yaml = c.home / "dagster.yaml"
        home_yaml.write_text(home_yaml.read_text() + RUN_RETRIES)
        engine = make_engine(app_url, role=APP_ROLE)
        sessions = make_sessionmaker(engine, tenant=ALL_TENANTS)
        for text in workflows:
            apply_yaml(sessions, text)
        process_env = {
            **c.env,
            "GOV_PIPELINE_REDIS_URL": redis_url,
            "GOV_PIPELINE_BATCH_THRESHOLD": "20",
            "GOV_PIPELINE_BATCH_SIZE": "25",
            "GOV_PIPELINE_SWEEP_GRACE": "20",
            "GOV_PIPELINE_SWEEP_INTERVAL": "10",
            "GOV_PIPELINE_WORKER_RECONCILE": "5",
            "GOV_PIPELINE_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
            "GOV_PIPELINE_WEBHOOK_RETRY_DELAY": "0.05",
            "GOV_PIPELINE_WEBHOOK_SECRET": "test-secret",
            **(env or {}),
        }
        logs = tmp_path / "logs"
        logs.mkdir(exist_ok=True)
        with ExitStack() as processes:
            stack = Stack(c, app_url, engine, sessions, logs, process_env, processes)
            stack.policy_ids.append(c.policy_id)
            try:
                stack.add_policies(policies_n - 1)
                if daemon:
                    stack.start_daemon()
                for i in range(workers):
                    stack.start_worker(f"w{i}")
                yield stack
            finally:
                processes.close()  # processes first, then the engine and the instance
                engine.dispose()


# -- a PostgreSQL server of the test's own ------------------------------------------------


def _pg_bin(name: str) -> str:
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    if not found:
        raise RuntimeError(f"no PostgreSQL {name} under /usr/lib/postgresql")
    return str(found[-1])


@dataclass
class PrivatePostgres:
    """A PostgreSQL cluster in a directory of its own, on a free port, 127.0.0.1 only."""

    data: Path
    port: int
    log: Path
    listen: str = "127.0.0.1"  # listen_addresses
    settings: tuple[str, ...] = ()  # more `name=value` server settings

    @property
    def admin_url(self) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{database}"

    def _ctl(self, *args: str) -> None:
        subprocess.run(
            [_pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", *args],
            check=True, capture_output=True, **_as_postgres(),
        )  # fmt: skip

    def _options(self) -> str:
        more = "".join(f" -c {setting}" for setting in self.settings)
        return f"-p {self.port} -k {self.data} -c listen_addresses={self.listen}{more}"

    def start(self) -> None:
        self._ctl("-o", self._options(), "start")

    def stop(self) -> None:
        self._ctl("-m", "fast", "stop")

    def restart(self) -> None:
        self._ctl("-m", "fast", "-o", self._options(), "restart")


def _as_postgres() -> dict[str, Any]:
    """initdb and pg_ctl refuse to run as root: run them as the postgres user then."""
    if os.geteuid() != 0:
        return {}
    import pwd

    user = pwd.getpwnam("postgres")

    def demote() -> None:
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)

    return {"preexec_fn": demote}


@contextmanager
def private_postgres(
    also_on: str | None = None, trusting: str | None = None, settings: Sequence[str] = ()
) -> Iterator[PrivatePostgres]:
    """initdb into a directory of its own (trust auth), started on a free port, listening on
    127.0.0.1 (and on the address `also_on`, trusting clients of the network `trusting`,
    for test hosts), with `settings` (`name=value`); stopped and removed afterwards. (Not
    under pytest's tmp_path: when the tests run as root, the server runs as `postgres`,
    which cannot enter root's 0700 dirs.)"""
    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="gov-test-pg-"))
    data = base / "data"
    if os.geteuid() == 0:
        import pwd

        user = pwd.getpwnam("postgres")
        os.chown(base, user.pw_uid, user.pw_gid)
    try:
        subprocess.run(
            [_pg_bin("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
             "--no-sync"],
            check=True, capture_output=True, **_as_postgres(),
        )  # fmt: skip
        if trusting is not None:
            with (data / "pg_hba.conf").open("a") as hba:
                hba.write(f"host all all {trusting} trust\n")
        listen = "127.0.0.1" + (f",{also_on}" if also_on else "")
        server = PrivatePostgres(data, free_port(), base / "server.log", listen, tuple(settings))
        server.start()
        try:
            yield server
        finally:
            subprocess.run(
                [_pg_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                capture_output=True, **_as_postgres(),
            )  # fmt: skip
    finally:
        shutil.rmtree(base, ignore_errors=True)
