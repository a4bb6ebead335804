"""The README, executed: every `bash` and `console` block runs as written, from the
repository root with the virtualenv's bin on PATH, and a few outcomes of each are checked;
`make dev` migrates and serves the data it is given.

How a block is marked is in `readme_support.py` (and in the README). The Quick start and the
Workflows continue each other in one bash session on a fresh GOV_PIPELINE_HOME (SQLite, as
the README's default). "Running the stack" and "The Redis run coordinator" share one stack:
the top-level dagster.yaml on PostgreSQL databases of the test's own, Redis under a key
prefix of its own; each long-running command runs in the background in a process group of
its own (as in a terminal of its own), each short one in `bash -e` once those are up. The SQL of
"Change capture" runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from gov_pipeline.coordinator.queue import QueueLimits, RunQueue
from gov_pipeline.db.engine import make_engine
from gov_pipeline.db.migrate import current_revision, head_revision
from gov_pipeline.db.models import (
    Approval,
    EntityChange,
    Policy,
    UserRole,
    WebhookDelivery,
    WorkflowExecution,
)
from gov_pipeline.embedded.instance import ROOT
from gov_pipeline_tests.conftest import REDIS_URL, own_database
from gov_pipeline_tests.e2e.readme_support import (
    RUN,
    Block,
    machine_paths,
    new_user_env,
    output_matches,
    readme_blocks,
    run_session,
    runnable,
    stop_groups,
)

QUICK_START = "Quick start (no server needed)"
WORKFLOWS = "Workflows"
STACK = "Running the stack"
COORDINATOR = "The Redis run coordinator"
CAPTURE = "Change capture"
# Every section with a block this module runs; a block anywhere else fails the first test.
RUN_HERE = {QUICK_START, WORKFLOWS, STACK, COORDINATOR}
RECEIVER_PORT = 8765  # in examples/workflows/publication_notice.yaml
WEB_PORT = 3000  # in the README's dagster-webserver line


def _wait(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(0.5)


def _require_free(port: int, what: str) -> None:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            pytest.fail(f"127.0.0.1:{port} is taken; the README's {what} needs it")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def test_every_runnable_block_is_run_here_and_names_no_machine_path() -> None:
    blocks = readme_blocks()
    assert {b.language for b in blocks} >= {"bash", "console", "text"}
    elsewhere = [
        f"README.md:{b.line} ({b.section})"
        for b in blocks
        if b.language in RUN and b.section not in RUN_HERE
    ]
    assert elsewhere == [], "run these in test_readme.py, or mark them ```text"
    assert all(runnable(section) for section in RUN_HERE)
    paths = [f"README.md:{b.line}: {p}" for b in blocks for p in machine_paths(b)]
    assert paths == []


def test_console_output_is_compared_line_by_line_with_ellipses() -> None:
    assert output_matches(
        ["error:  illegal move", "$ not a prompt"], ["error: illegal move", "$ not a prompt"]
    )
    assert output_matches(["in ...s", "...", "done"], ["", "in 0.05s", "a", "b", "done", ""])
    assert output_matches(["...", "done"], ["done"])
    assert not output_matches(["error: x"], ["error: y"])
    assert not output_matches(["a"], ["a", "an extra line"])
    assert not output_matches(["a", "b"], ["b", "a"])


def test_a_console_command_exits_0_unless_the_transcript_shows_its_status(
    tmp_path: Path,
) -> None:
    shown = "$ false\n$ echo $?\n1\n$ echo ok\nok\n$ false\n$ echo printed\nnot this"
    session = run_session(
        [Block("t", "console", shown, 7)], new_user_env({}), tmp_path / "log", timeout_s=30
    )
    assert session.returncode == 0
    assert session.transcript_problems() == [
        "README.md:7 `$ false`: exited 1",
        "README.md:7 `$ echo printed`: printed\nprinted",
    ]


# -- Quick start, then Workflows, on the embedded default ---------------------------------


@pytest.mark.e2e
def test_the_quick_start_and_the_workflows_run_as_written(tmp_path: Path) -> None:
    _require_free(RECEIVER_PORT, "example webhook receiver")
    blocks = runnable(QUICK_START) + runnable(WORKFLOWS)
    assert [b.language for b in blocks] == ["bash", "console", "bash", "console", "bash", "bash"], (
        "the README's Quick start and Workflows blocks changed: update the checks below"
    )
    home = tmp_path / "home"
    env = new_user_env({"GOV_PIPELINE_HOME": str(home)})
    session = run_session(blocks, env, tmp_path / "session.log", timeout_s=300)
    assert session.returncode == 0, session.where()
    assert session.transcript_problems() == []
    quick, _, flow, _, retry, others = (session.text(i) for i in range(len(blocks)))

    assert "created policy 1 (draft): Access control" in quick
    shown = json.loads(quick[quick.index("\n{") :])
    assert (shown["id"], shown["status"], shown["updated_by"]) == (1, "in_review", "alice")
    assert re.search(
        r"^1\s+policy:1\s+1\s+Compliance review\s+pending\s+compliance_officer", flow, re.M
    )
    assert re.search(r"^2\s+policy:1\s+2\s+CISO sign-off\s+pending\s+ciso", flow, re.M)
    assert re.search(r"^1\s+Access control\s+Information Security\s+approved\s", flow, re.M)
    assert "execution 2: retried" in retry and "now completed" in retry
    assert "receiver: POST /policy-events -> 200: Publication notice, execution 2" in retry
    assert "created risk 1 (identified): Vendor outage" in others
    assert "risk 1: identified -> assessed" in others
    assert "created compliance requirement 1 (not_started): Access reviews" in others
    assert "created policy exception 1 (requested): Legacy VPN" in others
    assert re.search(r"^3\s+risk:1\s+1\s+Risk manager\s+pending\s+risk_manager", others, re.M)
    risks = json.loads(others[others.index("\n{") :])
    assert [(r["id"], r["risk_score"], r["status"]) for r in risks["items"]] == [
        (1, 20, "assessed")
    ]
    # (The receiver says so as it stops, maybe after the session's last line.)
    assert "receiver: stopped; 1 accepted, 0 with a bad signature" in session.output

    engine = make_engine(f"sqlite:///{home / 'gov_pipeline.db'}")
    try:
        _check_the_story_s_data(engine)
    finally:
        engine.dispose()


def _check_the_story_s_data(engine: Engine) -> None:
    with Session(engine) as session:
        roles = {(r.user_id, r.role) for r in session.scalars(select(UserRole))}
        assert roles == {
            ("carol", "compliance_officer"),
            ("ciso", "admin"),
            ("dave", "risk_manager"),
        }
        steps = session.scalars(select(Approval).order_by(Approval.id)).all()
        assert [(a.id, a.status, a.decided_by) for a in steps] == [
            (1, "approved", "carol"),
            (2, "approved", "ciso"),
            (3, "pending", None),  # the risk's acceptance
        ]
        moves = [
            (c.old_values["status"], c.new_values["status"])  # type: ignore[index]
            for c in session.scalars(select(EntityChange).order_by(EntityChange.id))
            if c.kind == "status_changed" and c.entity_type == "policy"
        ]
        # The refused in_review -> published wrote nothing.
        assert moves == [
            ("draft", "in_review"),
            ("in_review", "approved"),
            ("approved", "published"),
        ]
        assert session.scalars(select(Policy.status)).all() == ["published"]
        notice = session.get(WorkflowExecution, 2)
        assert notice is not None and (notice.status, notice.entity_id) == ("completed", "1")
        delivery = session.scalars(select(WebhookDelivery)).one()
        assert (delivery.execution_id, delivery.status) == (2, "delivered")
        failed = session.scalars(
            select(WorkflowExecution).where(WorkflowExecution.status == "failed")
        ).all()
        assert failed == []


# -- Change capture: another application's minimal write ----------------------------------


def test_the_change_capture_sql_is_enough_for_another_writer(engine: Engine, tenant: str) -> None:
    (sql,) = [b for b in readme_blocks() if b.section == CAPTURE and b.language == "sql"]
    with engine.begin() as conn:
        for statement in sql.text.split(";"):
            if statement.strip():
                conn.execute(text(statement))
    with engine.connect() as conn:
        kinds = conn.execute(text("SELECT entity_type, kind FROM entity_changes ORDER BY id")).all()
        status = conn.execute(text("SELECT status FROM policies")).scalar_one()
        risk = conn.execute(text("SELECT status, risk_score FROM risks")).one()
    assert [tuple(k) for k in kinds] == [
        ("policy", "created"), ("policy", "status_changed"),
        ("risk", "created"), ("risk", "status_changed"),
    ]  # fmt: skip
    assert status == "in_review" and tuple(risk) == ("assessed", 12)


# -- Running the stack, and the Redis run coordinator's commands ---------------------------

LONG_RUNNING = re.compile(r"^(dagster-daemon run|dagster-webserver|gov-pipeline worker)\b")


@dataclass
class Stack:
    """The README's stack commands, run one by one: long-running ones in the background,
    each in a process group of its own, until `stop`."""

    env: dict[str, str]
    logs: Path
    dagster_url: str
    queue: RunQueue
    started: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)

    def run(self, block: Block) -> None:
        for command in block.commands():
            if LONG_RUNNING.match(command) and "--burst" not in command:
                self.start(command)
                continue
            self.wait_until_up()
            done = subprocess.run(
                ["bash", "-e", "-c", command], cwd=ROOT, env=self.env, capture_output=True,
                text=True, timeout=300,
            )  # fmt: skip
            where = f"README.md:{block.line} `{command}`"
            assert done.returncode == 0, f"{where} exited {done.returncode}:\n{done.stderr}"
            self.outputs[command.split("#")[0].strip()] = done.stdout + done.stderr
        self.wait_until_up()

    def start(self, command: str) -> None:
        with self.log(len(self.started)).open("wb") as log:
            process = subprocess.Popen(
                ["bash", "-c", command], cwd=ROOT, env=self.env, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self.started.append((command, process))

    def log(self, number: int) -> Path:
        return self.logs / f"{number}.log"

    def stop(self) -> None:
        stop_groups([process for _, process in self.started], grace_s=30.0)

    def wait_until_up(self) -> None:
        """Each long-running command started so far is up: the daemon's heartbeat, the
        webserver's /server_info, each worker alive in Redis."""
        for number, (command, _) in enumerate(self.started):
            _wait(partial(self._up, number), 180, f"`{command}` to come up")

    def _up(self, number: int) -> bool:
        command, process = self.started[number]
        if process.poll() is not None:
            raise AssertionError(f"`{command}` exited:\n{self.log(number).read_text()[-3000:]}")
        if command.startswith("dagster-daemon"):
            engine = create_engine(self.dagster_url)
            try:
                with engine.connect() as conn:
                    kinds = conn.execute(text("SELECT daemon_type FROM daemon_heartbeats"))
                    return "SENSOR" in set(kinds.scalars())
            except Exception:  # no table yet: the daemon is creating its storage
                return False
            finally:
                engine.dispose()
        if command.startswith("dagster-webserver"):
            port = re.search(r"-p (\d+)", command)
            assert port is not None
            return _answers(f"http://127.0.0.1:{port.group(1)}/server_info")
        return any(
            w["alive"] and _in_group(str(w["worker_id"]), process.pid) for w in self.queue.workers()
        )


def _in_group(worker_id: str, group: int) -> bool:
    """Whether the worker `host:pid` (or `host:pid/n`) is a process of `group`."""
    pid = re.search(r":(\d+)(?:/\d+)?$", worker_id)
    try:
        return pid is not None and os.getpgid(int(pid.group(1))) == group
    except ProcessLookupError:
        return False


@pytest.mark.e2e
def test_running_the_stack_and_the_queue_commands_as_written(
    tmp_path: Path, redis_prefix: str
) -> None:
    _require_free(WEB_PORT, "dagster-webserver")
    blocks = runnable(STACK) + runnable(COORDINATOR)
    assert [b.language for b in blocks] == ["bash", "bash"]
    with own_database("_readme") as app_url, own_database("_readme_dagster") as dagster_url:
        home = tmp_path / "dagster_home"
        home.mkdir()
        shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
        storage = make_url(dagster_url)
        env = new_user_env(
            {
                "DAGSTER_HOME": str(home),
                "DAGSTER_PG_USER": storage.username or "postgres",
                "DAGSTER_PG_PASSWORD": storage.password or "",
                "DAGSTER_PG_HOST": storage.host or "127.0.0.1",
                "DAGSTER_PG_DB": storage.database or "",
                "DAGSTER_PG_PORT": str(storage.port or 5432),
                "GOV_PIPELINE_DATABASE_URL": app_url,
                "GOV_PIPELINE_REDIS_URL": REDIS_URL,
                "GOV_PIPELINE_REDIS_PREFIX": redis_prefix,
                "GOV_PIPELINE_HOME": str(tmp_path / "home"),
            }
        )
        logs = tmp_path / "logs"
        logs.mkdir()
        queue = RunQueue.from_url(REDIS_URL, redis_prefix, QueueLimits())
        stack = Stack(env, logs, dagster_url, queue)
        try:
            for block in blocks:
                stack.run(block)
            workers = queue.workers()
        finally:
            stack.stop()
        queue.client.close()
        assert current_revision(app_url) == head_revision()
    _check_the_stack_s_outputs(stack.outputs, workers)


def _check_the_stack_s_outputs(outputs: dict[str, str], workers: list[dict[str, Any]]) -> None:
    # Four commands started workers; execute mode registers one per process.
    modes = sorted(str(w["mode"]) for w in workers if w["alive"])
    assert modes == ["execute", "execute", "launch", "launch", "launch"], workers
    first = outputs["gov-pipeline queue status"]
    assert re.search(r"^policy\s+0\s+0\s+-\s+5\s+False", first, re.M), first
    # (the daemon may be running a governance refresh at that moment)
    assert re.search(r"^running \d+ of at most 10$", first, re.M), first
    assert "worker done in" in outputs["gov-pipeline worker --burst"]
    assert "lane import paused" in outputs["gov-pipeline queue pause import"]
    assert "lane import resumed" in outputs["gov-pipeline queue resume import"]
    status = json.loads(outputs["gov-pipeline queue status --json"])
    assert status["paused"] == [] and status["max_concurrent_runs"] == 10
    assert {lane["lane"] for lane in status["lanes"]} >= {"policy", "notification", "import"}


# -- make dev ------------------------------------------------------------------------------


@pytest.mark.e2e
def test_make_dev_migrates_and_serves_the_data_it_is_given(tmp_path: Path) -> None:
    port, home = _free_port(), tmp_path / "home"
    with (tmp_path / "dev.log").open("wb") as log:
        process = subprocess.Popen(
            ["make", "dev", f"PORT={port}", f"GOV_PIPELINE_HOME={home}"], cwd=ROOT,
            env=new_user_env({}), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            _wait(lambda: _answers(f"http://127.0.0.1:{port}/server_info"), 180, "make dev")
            assert current_revision(f"sqlite:///{home / 'gov_pipeline.db'}") == head_revision()
            info = _graphql(port, "{ instance { info } }")["instance"]["info"]
            assert str(home / "dagster") in info
        finally:
            stop_groups([process], 30.0)


def _graphql(port: int, query: str) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        answer: dict[str, Any] = json.loads(response.read())["data"]
    return answer
