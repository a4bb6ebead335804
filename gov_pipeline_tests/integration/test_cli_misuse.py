"""CLI misuse, for every command group and command: a usage error is one line on stderr and
exit code 2; a bad-data error (unknown tenant, unknown id) is one line and exit code 1."""

from __future__ import annotations

import importlib
import json
import pkgutil
import shutil
from pathlib import Path
from typing import Any

import click
import pytest

import gov_pipeline.cli
from gov_pipeline.cli.app import cli
from gov_pipeline.db.integrity import ALL_TENANTS
from gov_pipeline_tests.conftest import REDIS_URL
from gov_pipeline_tests.integration.engine_support import cli_invoker

# Importing every module of the CLI package registers its commands, as `main` does.
for _module in pkgutil.iter_modules(gov_pipeline.cli.__path__):
    importlib.import_module(f"gov_pipeline.cli.{_module.name}")


def _walk(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], bool]]:
    found = []
    for name, command in sorted(group.commands.items()):
        is_group = isinstance(command, click.Group)
        found.append(((*path, name), is_group))
        if is_group:
            found += _walk(command, (*path, name))
    return found


COMMANDS = _walk(cli)
GROUPS = [path for path, is_group in COMMANDS if is_group]
LEAVES = [path for path, is_group in COMMANDS if not is_group]
TOP_LEVEL = sorted(path[0] for path, _ in COMMANDS if len(path) == 1)


@pytest.fixture(scope="module")
def acme_db(sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite database with tenant acme, shared by the usage tests (they write
    nothing: each is refused before any write)."""
    from gov_pipeline.db.engine import make_engine, make_sessionmaker
    from gov_pipeline.services.tenants import create_tenant

    path = tmp_path_factory.mktemp("cli-misuse") / "gov.db"
    shutil.copyfile(sqlite_template, path)
    engine = make_engine(f"sqlite:///{path}")
    with make_sessionmaker(engine, tenant=ALL_TENANTS).begin() as session:
        create_tenant(session, tenant_id="acme")
    engine.dispose()
    return path


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], acme_db: Path):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("GOV_PIPELINE_DATABASE_URL", f"sqlite:///{acme_db}")
    monkeypatch.delenv("GOV_PIPELINE_TENANT", raising=False)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    return cli_invoker(capsys)


def redis_dagster_home(tmp_path: Path, prefix: str, **coordinator: Any) -> Path:
    """A DAGSTER_HOME on Dagster's default SQLite storage whose run coordinator is ours, on
    the shared Redis under `prefix`."""
    home = tmp_path / "dagster"
    home.mkdir()
    config = json.dumps({"redis_url": REDIS_URL, "key_prefix": prefix, **coordinator})
    (home / "dagster.yaml").write_text(
        "instance_class:\n  module: gov_pipeline.coordinator.instance\n  class: GovDagsterInstance\n"
        "run_coordinator:\n  module: gov_pipeline.coordinator.run_coordinator\n"
        f"  class: RedisRunCoordinator\n  config: {config}\ntelemetry:\n  enabled: false\n"
    )
    return home


def one_line_error(code: int, out: str, err: str, expected_code: int) -> str:
    assert code == expected_code, (code, out, err)
    assert out == "", out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_the_command_tree_is_what_the_tables_below_cover() -> None:
    # A new top-level command or group must get its rows in USAGE_ERRORS and BAD_DATA.
    assert sorted(USAGE_GROUPS) == TOP_LEVEL
    assert {path[0] for path in BAD_DATA} | WITHOUT_BAD_DATA == set(TOP_LEVEL)
    assert len(LEAVES) >= 30


@pytest.mark.parametrize("path", LEAVES, ids=" ".join)
def test_an_unknown_option_is_a_one_line_usage_error(run, path: tuple[str, ...]) -> None:  # type: ignore[no-untyped-def]
    line = one_line_error(*run(*path, "--no-such-option"), expected_code=2)
    assert "--no-such-option" in line


@pytest.mark.parametrize("path", [(), *GROUPS], ids=lambda p: " ".join(p) or "root")
def test_an_unknown_subcommand_is_a_one_line_usage_error(run, path: tuple[str, ...]) -> None:  # type: ignore[no-untyped-def]
    line = one_line_error(*run(*path, "frobnicate"), expected_code=2)
    assert "No such command 'frobnicate'" in line


@pytest.mark.parametrize("path", [(), *GROUPS], ids=lambda p: " ".join(p) or "root")
def test_a_group_without_its_subcommand_prints_its_help_and_exits_2(
    run, path: tuple[str, ...]
) -> None:  # type: ignore[no-untyped-def]
    code, out, err = run(*path)
    assert (code, err) == (2, "")
    assert "Commands:" in out


@pytest.mark.parametrize("path", LEAVES, ids=" ".join)
def test_help_of_every_command_exits_0(run, path: tuple[str, ...]) -> None:  # type: ignore[no-untyped-def]
    code, out, err = run(*path, "--help")
    assert (code, err) == (0, "") and "Usage: gov-pipeline" in out


# Missing required arguments and values of the wrong type, for every group.
USAGE_GROUPS: dict[str, list[tuple[list[str], str]]] = {
    "db": [
        (["db", "upgrade", "--revision"], "requires an argument"),
        (["db", "current", "extra"], "unexpected extra argument"),
    ],
    "tenants": [
        (["tenants", "create"], "Missing argument 'TENANT_ID'"),
        (["tenants", "create", "bad id"], "tenant:"),
        (["tenants", "create", "acme", "--name", "n" * 201], "name: at most 200"),
    ],
    "users": [
        (["users", "create"], "Missing argument 'USER_ID'"),
        (["users", "create", "u1"], "tenant: is required"),
        (["users", "create", "u1", "-t", "acme", "--role", "wizard"], "unknown role 'wizard'"),
    ],
    "policies": [
        (["policies", "show"], "Missing argument 'POLICY_ID'"),
        (["policies", "show", "x1", "-t", "acme"], "not a policy id"),
        (["policies", "list", "-t", "acme", "--limit", "lots"], "'lots' is not a valid integer"),
        (["policies", "list", "-t"], "requires an argument"),
        (["policies", "set-status", "1"], "Missing argument 'STATUS'"),
        (["policies", "create", "-t", "acme", "--title", "x"], "--type"),
        (
            [
                "policies",
                "create",
                "-t",
                "acme",
                "--title",
                "x",
                "--type",
                "y",
                "--status",
                "published",
            ],
            "a new policy starts as draft, not published",
        ),
        (["policies", "import", "/no/such/file.csv", "-t", "acme"], "does not exist"),
        (["policies", "import", __file__, "-t", "acme", "--chunk-size", "0"], "--chunk-size"),
    ],
    "workflows": [
        (["workflows", "apply"], "Missing argument 'FILES...'"),
        (["workflows", "dry-run"], "Missing argument 'FILE'"),
        (["workflows", "dry-run", "wf.yaml"], "Missing option '--entity'"),
        (
            ["workflows", "dry-run", "wf.yaml", "--policy", "1", "--change", "x"],
            "not a valid integer",
        ),
    ],
    "executions": [
        (["executions", "show"], "Missing argument 'EXECUTION_ID'"),
        (["executions", "show", "abc", "-t", "acme"], "not an execution id"),
        (["executions", "list", "-t", "acme", "--limit", "x"], "not a valid integer"),
        (["executions", "retry"], "Missing argument 'EXECUTION_ID'"),
        (["executions", "cancel"], "Missing argument 'EXECUTION_ID'"),
        (["executions", "cancel", "abc", "-t", "acme"], "not an execution id"),
        (["executions", "cancel", "1", "-t", "acme", "--actor", "a b"], "actor: 'a b' must match"),
    ],
    "approvals": [
        (["approvals", "approve"], "Missing argument 'APPROVAL_ID'"),
        (["approvals", "approve", "1", "-t", "acme"], "Missing option '--user'"),
        (
            ["approvals", "reject", "1", "-t", "acme", "--user", "u", "--signature", "{"],
            "--signature: must be JSON",
        ),
        (["approvals", "list"], "tenant: is required"),
    ],
    "notifications": [
        (["notifications", "list", "-t", "acme", "--limit", "many"], "not a valid integer"),
        (["notifications", "list"], "tenant: is required"),
    ],
    "tasks": [
        (["tasks", "list"], "tenant: is required"),
        (["tasks", "list", "-t"], "requires an argument"),
        (["tasks", "show"], "Missing argument 'TASK_ID'"),
        (["tasks", "create", "-t", "acme", "--title", "x", "--priority", "soon"], "priority:"),
        (["tasks", "set-status", "1", "-t", "acme"], "Missing argument 'STATUS'"),
    ],
    "risks": [
        (["risks", "show"], "Missing argument 'RISK_ID'"),
        (["risks", "show", "x1", "-t", "acme"], "not a risk id"),
        (["risks", "create", "-t", "acme", "--title", "x"], "--category"),
        (
            ["risks", "create", "-t", "acme", "--title", "x", "--category", "c", "--impact", "9"],
            "impact: Input should be less than or equal to 5",
        ),
        (
            [
                "risks",
                "create",
                "-t",
                "acme",
                "--title",
                "x",
                "--category",
                "c",
                "--status",
                "closed",
            ],
            "a new risk starts as identified, not closed",
        ),
        (["risks", "list", "-t", "acme", "--status", "gone"], "unknown status 'gone'"),
    ],
    "requirements": [
        (["requirements", "show"], "Missing argument 'COMPLIANCE_REQUIREMENT_ID'"),
        (["requirements", "create", "-t", "acme", "--title", "x"], "--framework"),
        (
            [
                "requirements",
                "create",
                "-t",
                "acme",
                "--title",
                "x",
                "--framework",
                "f",
                "--due",
                "soon",
            ],
            "due_date:",
        ),
    ],
    "sops": [
        (["sops", "show"], "Missing argument 'SOP_ID'"),
        (["sops", "create", "-t", "acme", "--title", "x"], "--area"),
        (["sops", "import", "/no/such/file.csv", "-t", "acme"], "does not exist"),
    ],
    "exceptions": [
        (["exceptions", "show"], "Missing argument 'POLICY_EXCEPTION_ID'"),
        (["exceptions", "create", "-t", "acme", "--title", "x"], "--policy"),
        (
            ["exceptions", "create", "-t", "acme", "--title", "x", "--policy", "0"],
            "policy_id: Input should be greater than or equal to 1",
        ),
        # A reference to a policy that is not the tenant's is bad input.
        (
            ["exceptions", "create", "-t", "acme", "--title", "x", "--policy", "999"],
            "policy_id: no policy 999 in tenant 'acme'",
        ),
    ],
    "process": [
        (["process"], "--sync: is required"),
        (["process", "--sync", "--batch-size", "0"], "not in the range"),
        (["process", "--sync", "--max-changes", "x"], "--max-changes"),
        (["process", "--sync", "--retry-delay", "soon"], "not a valid float"),
    ],
    "worker": [
        (["worker", "--concurrency", "0"], "not in the range"),
        (["worker", "--mode", "fork"], "'fork' is not one of"),
        (["worker", "-w", "/no/such/workspace.yaml"], "does not exist"),
        (["worker", "--burst"], "cannot open the Dagster instance"),  # no DAGSTER_HOME
    ],
    "queue": [
        (["queue", "pause"], "Missing argument 'LANE'"),
        (["queue", "requeue"], "Missing argument 'RUN_ID'"),
        (["queue", "status", "extra"], "unexpected extra argument"),
    ],
    "verify": [
        (["verify", "--no-such-flag"], "--no-such-flag"),
    ],
    "audit": [
        (
            ["audit", "export", "-t", "acme", "--to", "2026-02-01", "--out", "x"],
            "Missing option '--from'",
        ),
        (
            [
                "audit",
                "export",
                "-t",
                "acme",
                "--from",
                "2026-01-01",
                "--to",
                "2026-02-01",
                "--out",
                "x",
                "--format",
                "xml",
            ],
            "'xml' is not one of",
        ),
    ],
    "report": [
        (["report", "compliance", "--no-such-flag"], "--no-such-flag"),
    ],
}
USAGE_ERRORS = [(args, needle) for rows in USAGE_GROUPS.values() for args, needle in rows]


@pytest.mark.parametrize(("args", "needle"), USAGE_ERRORS, ids=lambda a: " ".join(a)[:60])
def test_missing_arguments_and_bad_values_are_one_line_usage_errors(
    run,  # type: ignore[no-untyped-def]
    args: list[str],
    needle: str,
) -> None:
    line = one_line_error(*run(*args), expected_code=2)
    assert needle in line


# -- bad data: exit code 1, on both databases ------------------------------------------------

WORKFLOW = """
name: notice
tenant_id: acme
type: notification
trigger: on_status_change
actions: [{type: notify, users: [u1], title: t}]
"""

BAD_DATA: dict[tuple[str, ...], str] = {
    ("db", "upgrade", "--revision", "no-such-revision"): "migration failed",
    ("tenants", "list"): "database unavailable",  # run against a database that does not exist
    ("users", "list", "-t", "ghost"): "tenant 'ghost' not found",
    ("users", "create", "u1", "-t", "ghost"): "tenant 'ghost' not found",
    ("policies", "show", "999", "-t", "acme"): "policy 999 not found",
    ("policies", "list", "-t", "ghost"): "tenant 'ghost' not found",
    ("policies", "set-status", "999", "approved", "-t", "acme"): "policy 999 not found",
    ("policies", "create", "-t", "ghost", "--title", "x", "--type", "y"): "tenant 'ghost'",
    ("workflows", "list", "-t", "ghost"): "tenant 'ghost' not found",
    ("workflows", "dry-run", "WF", "--policy", "999"): "policy 999 not found in tenant 'acme'",
    ("executions", "show", "999", "-t", "acme"): "execution 999 not found",
    ("executions", "list", "-t", "ghost"): "tenant 'ghost' not found",
    ("executions", "retry", "999", "-t", "acme"): "execution 999 not found",
    ("executions", "cancel", "999", "-t", "acme"): "execution 999 not found",
    ("approvals", "approve", "999", "-t", "acme", "--user", "carol"): "approval 999 not found",
    ("approvals", "list", "-t", "ghost"): "tenant 'ghost' not found",
    ("approvals", "list", "-t", "acme", "--user", "zed"): "user 'zed' not found in tenant 'acme'",
    ("notifications", "list", "-t", "ghost"): "tenant 'ghost' not found",
    ("tasks", "list", "-t", "ghost"): "tenant 'ghost' not found",
    ("tasks", "set-status", "999", "done", "-t", "acme"): "task 999 not found",
    ("risks", "show", "999", "-t", "acme"): "risk 999 not found",
    ("risks", "create", "-t", "ghost", "--title", "x", "--category", "c"): "tenant 'ghost'",
    ("requirements", "update", "999", "-t", "acme", "--set", "reference=A.1"): (
        "compliance requirement 999 not found"
    ),
    ("sops", "delete", "999", "-t", "acme"): "SOP 999 not found",
    ("exceptions", "show", "999", "-t", "acme"): "policy exception 999 not found",
    ("process", "--sync", "--quiet"): "database unavailable",
    ("queue", "requeue", "no-such-run"): "run 'no-such-run' not found",
    ("verify", "--no-dagster"): "database unavailable",
    (
        "audit",
        "export",
        "-t",
        "ghost",
        "--from",
        "2026-01-01",
        "--to",
        "2026-02-01",
        "--out",
        "audit-out",
    ): "tenant 'ghost' not found",
    ("report", "compliance", "-t", "ghost"): "tenant 'ghost' not found",
    ("approvals", "delegate", "999", "-t", "acme", "--user", "carol", "--to", "ciso"): (
        "approval 999 not found"
    ),
    ("policies", "complete-review", "999", "-t", "acme", "--as", "carol"): "policy 999 not found",
}
# The worker reads no data of ours: its failures are configuration (exit 2, below) or a Redis
# outage, which it waits out.
WITHOUT_BAD_DATA = {"worker"}
# Commands whose failure needs a database that is not there (on SQLite: a missing file, which
# must not be created), or no Dagster home.
NO_DATABASE = {("tenants", "list"), ("process", "--sync", "--quiet"), ("verify", "--no-dagster")}


@pytest.mark.parametrize(("args", "needle"), BAD_DATA.items(), ids=lambda a: " ".join(a)[:50])
def test_bad_data_is_a_one_line_failure_with_exit_code_1(
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    redis_prefix: str,
    args: tuple[str, ...],
    needle: str,
) -> None:
    monkeypatch.setenv("GOV_PIPELINE_DATABASE_URL", db_url)
    monkeypatch.delenv("GOV_PIPELINE_TENANT", raising=False)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    run = cli_invoker(capsys)
    assert run("tenants", "create", "acme")[0] == 0
    workflow = tmp_path / "wf.yaml"
    workflow.write_text(WORKFLOW)
    if args in NO_DATABASE:
        gone = db_url.rsplit("/", 1)[0] + "/no_such_database_here"
        if db_url.startswith("sqlite"):  # a missing file is not created: it is named
            gone = f"sqlite:///{tmp_path}/missing-dir/x.db"
            needle = f"database {tmp_path}/missing-dir/x.db does not exist"
        monkeypatch.setenv("GOV_PIPELINE_DATABASE_URL", gone)
    if args[0] == "queue":
        monkeypatch.setenv("DAGSTER_HOME", str(redis_dagster_home(tmp_path, redis_prefix)))
    line = one_line_error(*run(*[str(workflow) if a == "WF" else a for a in args]), expected_code=1)
    assert needle in line
    assert not (tmp_path / "missing-dir").exists()


# -- lanes: the coordinator's configured lanes and the lanes Redis has seen -------------------

KNOWN_LANES = (
    "assessment, audit, bulk, custom, evidence, export, import, notification, policy, reporting"
)


@pytest.fixture
def lane_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, redis_prefix: str) -> Any:
    """DAGSTER_HOME with our coordinator (the eight default lanes plus a configured `bulk`);
    Redis has seen a run in lane `custom`. Returns the Redis client."""
    import redis

    from gov_pipeline.coordinator.keys import Keys

    home = redis_dagster_home(tmp_path, redis_prefix, lanes={"bulk": 1})
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    client.sadd(Keys(redis_prefix).lanes, "custom")
    yield client
    client.close()


@pytest.mark.redis
@pytest.mark.parametrize(
    ("args", "unknown"),
    [
        (("queue", "pause", "polcy"), "'polcy'"),
        (("queue", "resume", "nosuchlane"), "'nosuchlane'"),
        (("worker", "--burst", "--lanes", "policy,polcy, nosuchlane"), "'polcy', 'nosuchlane'"),
    ],
    ids=lambda a: " ".join(a) if isinstance(a, tuple) else None,
)
def test_an_unknown_lane_is_a_one_line_usage_error_naming_the_known_ones(
    run,  # type: ignore[no-untyped-def]
    lane_home: Any,
    redis_prefix: str,
    args: tuple[str, ...],
    unknown: str,
) -> None:
    from gov_pipeline.coordinator.keys import Keys

    line = one_line_error(*run(*args), expected_code=2)
    assert f"unknown lane {unknown}" in line
    assert f"known lanes: {KNOWN_LANES}" in line
    keys = Keys(redis_prefix)
    assert lane_home.smembers(keys.paused) == set() and lane_home.hlen(keys.workers) == 0


@pytest.mark.redis
def test_pause_and_resume_take_configured_lanes_and_lanes_redis_has_seen(
    run,  # type: ignore[no-untyped-def]
    lane_home: Any,
    redis_prefix: str,
) -> None:
    from gov_pipeline.coordinator.keys import Keys

    paused = Keys(redis_prefix).paused
    for lane in ("audit", "bulk", "custom"):
        assert run("queue", "pause", lane) == (0, f"lane {lane} paused\n", "")
    assert lane_home.smembers(paused) == {"audit", "bulk", "custom"}
    for lane in ("audit", "bulk", "custom"):
        assert run("queue", "resume", lane) == (0, f"lane {lane} resumed\n", "")
    assert lane_home.smembers(paused) == set()


def test_validate_lists_each_issue_on_its_own_line_then_one_error_line(
    run,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    """`workflows validate` reports every issue (one `file: path: message` line each, as
    documented), then the one error line; nothing else, exit code 1."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(WORKFLOW.replace("notification", "notice").replace("[u1]", "[]"))
    unreadable = tmp_path / "missing.yaml"
    code, out, err = run("workflows", "validate", str(bad), str(unreadable))
    assert (code, out) == (1, "")
    *issues, last = err.strip().splitlines()
    assert last == "error: 3 problem(s) in 2 file(s); nothing stored"
    assert [line.split(": ", 2)[:2] for line in issues] == [
        [str(bad), "type"],
        [str(bad), "actions[0]"],
        [str(unreadable), "cannot read file"],
    ]
