"""The command line: exit codes 0/1/2, one-line errors, --json output, nothing written on error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gov_pipeline_tests.integration.engine_support import cli_invoker


@pytest.fixture
def run(db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("GOV_PIPELINE_DATABASE_URL", db_url)
    monkeypatch.delenv("GOV_PIPELINE_TENANT", raising=False)

    invoke = cli_invoker(capsys)

    return invoke


def test_policy_round_trip(run) -> None:  # type: ignore[no-untyped-def]
    assert run("tenants", "create", "acme")[0] == 0
    code, out, _ = run("policies", "create", "-t", "acme", "--title", "Access", "--type", "Security",
                       "--owner", "dave", "--set", "tags=[\"iso\"]", "--json")  # fmt: skip
    assert code == 0
    pid = str(json.loads(out)["id"])
    assert run("policies", "set-status", pid, "in_review", "-t", "acme")[0] == 0
    assert run("policies", "update", pid, "-t", "acme", "--set", "title=Access v2")[0] == 0
    code, out, _ = run("policies", "show", pid, "-t", "acme", "--json")
    shown = json.loads(out)
    assert (shown["title"], shown["status"], shown["tags"]) == ("Access v2", "in_review", ["iso"])
    code, out, _ = run("policies", "list", "-t", "acme", "--status", "in_review", "--json")
    assert code == 0 and json.loads(out)["total"] == 1
    code, out, _ = run("policies", "list", "-t", "acme")
    assert "Access v2" in out and "in_review" in out


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["policies", "show", "999", "-t", "acme"], 1, "policy 999 not found"),
        (["policies", "set-status", "PID", "published", "-t", "acme"], 1, "draft -> published"),
        (["policies", "list"], 2, "tenant: is required"),
        (["policies", "create", "-t", "acme", "--title", "x"], 2, "--type"),
        (["policies", "update", "PID", "-t", "acme", "--set", "effective_date=soon"], 2, "effective_date"),
        (["policies", "update", "PID", "-t", "acme", "--set", "novalue"], 2, "KEY=VALUE"),
        (["policies", "create", "-t", "ghost", "--title", "x", "--type", "y"], 1, "tenant 'ghost' not found"),
        (["policies", "frobnicate"], 2, "No such command"),
        (["policies", "list", "-t", "acme", "--limit", "lots"], 2, "lots"),
    ],
)  # fmt: skip
def test_errors_are_one_line_with_the_right_exit_code(
    run,
    args: list[str],
    code: int,
    needle: str,  # type: ignore[no-untyped-def]
) -> None:
    run("tenants", "create", "acme")
    _, out, _ = run("policies", "create", "-t", "acme", "--title", "A", "--type", "S", "--json")
    pid = str(json.loads(out)["id"])
    _, before, _ = run("policies", "list", "-t", "acme", "--json")
    got, out, err = run(*[pid if a == "PID" else a for a in args])
    assert got == code
    assert needle in err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ")
    assert "Traceback" not in err
    assert run("policies", "list", "-t", "acme", "--json")[1] == before


def test_the_console_script_runs(db_url: str, tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("gov-pipeline")
    env = {**os.environ, "GOV_PIPELINE_DATABASE_URL": db_url}
    done = subprocess.run(
        [str(exe), "db", "upgrade"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "database at revision" in done.stdout
    bad = subprocess.run([str(exe), "--nope"], env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ")
