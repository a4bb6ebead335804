"""The CLI never creates the application database by accident: a command that needs the
schema names the database it tried and says to run `gov-pipeline db upgrade` (exit 1); only
`db upgrade` creates the database file."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, event, select, text
from sqlalchemy.engine import make_url

from gov_pipeline.cli.context import AppContext
from gov_pipeline.db.migrate import downgrade, upgrade
from gov_pipeline_tests.conftest import ADMIN_URL
from gov_pipeline_tests.integration.engine_support import cli_invoker, make_settings
from gov_pipeline_tests.integration.test_cli_misuse import one_line_error

UPGRADE_HINT = "run gov-pipeline db upgrade"

# Commands that read or write the application database, one of each kind.
NEEDS_SCHEMA = [
    ("tenants", "list"),
    ("tenants", "create", "acme"),
    ("policies", "list", "-t", "acme"),
    ("approvals", "list", "-t", "acme"),
    ("process", "--sync", "--quiet"),
    ("verify", "--no-dagster"),
]


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path):  # type: ignore[no-untyped-def]
    """The CLI, run from an empty folder with the default (relative) database."""
    for name in ("GOV_PIPELINE_DATABASE_URL", "GOV_PIPELINE_HOME", "GOV_PIPELINE_TENANT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    return cli_invoker(capsys)


@pytest.mark.parametrize("args", NEEDS_SCHEMA, ids=" ".join)
def test_a_command_run_from_another_folder_creates_no_database(  # type: ignore[no-untyped-def]
    run, tmp_path: Path, args: tuple[str, ...]
) -> None:
    line = one_line_error(*run(*args), expected_code=1)
    default = tmp_path / ".gov_pipeline" / "gov_pipeline.db"
    assert f"database {default} does not exist" in line and UPGRADE_HINT in line
    assert list(tmp_path.iterdir()) == []  # neither the file nor its folder


def test_db_current_reports_a_missing_database_and_creates_nothing(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, out, err = run("db", "current")
    assert (code, err) == (0, "")
    assert out.startswith(f"current: none (database {tmp_path / '.gov_pipeline'}")
    assert list(tmp_path.iterdir()) == []


def test_db_upgrade_creates_the_database_and_then_commands_work(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert run("db", "upgrade")[0] == 0
    assert (tmp_path / ".gov_pipeline" / "gov_pipeline.db").is_file()
    assert run("tenants", "create", "acme")[0] == 0
    code, out, _ = run("tenants", "list")
    assert code == 0 and "acme" in out


def _empty_file(path: Path) -> None:
    path.touch()


def _other_tables_only(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY)")


def _downgraded_to_base(path: Path) -> None:  # alembic_version exists, holding no revision
    upgrade(f"sqlite:///{path}")
    downgrade(f"sqlite:///{path}", "base")


@pytest.mark.parametrize("make", [_empty_file, _other_tables_only, _downgraded_to_base])
def test_a_sqlite_file_without_the_schema_is_named_and_left_alone(  # type: ignore[no-untyped-def]
    run, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, make
) -> None:
    path = tmp_path / "elsewhere.db"
    make(path)
    monkeypatch.setenv("GOV_PIPELINE_DATABASE_URL", f"sqlite:///{path}")
    before = path.read_bytes()
    line = one_line_error(*run("policies", "list", "-t", "acme"), expected_code=1)
    assert f"database {path} has no schema" in line and UPGRADE_HINT in line
    assert path.read_bytes() == before


@pytest.mark.postgres
def test_a_postgres_database_without_the_schema_is_named_without_its_password(  # type: ignore[no-untyped-def]
    run, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"gov_test_empty_{uuid.uuid4().hex[:8]}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    # The server trusts local connections: the password is only there to be masked.
    url = make_url(ADMIN_URL).set(database=name, password="s3cret")
    try:
        monkeypatch.setenv("GOV_PIPELINE_DATABASE_URL", url.render_as_string(hide_password=False))
        code, out, err = run("tenants", "list")
        line = one_line_error(code, out, err, expected_code=1)
        assert "s3cret" not in err
        assert f"database {url.render_as_string(hide_password=True)} has no schema" in line
        assert UPGRADE_HINT in line
        assert run("db", "upgrade")[0] == 0
        assert run("tenants", "list")[0] == 0
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_the_schema_is_checked_once_per_command_not_per_transaction(db_url: str) -> None:
    def schema_queries(transactions: int) -> int:
        seen: list[str] = []

        def record(conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
            if "alembic_version" in f"{statement} {parameters}":
                seen.append(statement)

        event.listen(Engine, "before_cursor_execute", record)
        app = AppContext(settings=make_settings(db_url))
        try:
            for _ in range(transactions):
                with app.transaction() as session:
                    session.execute(select(1))
        finally:
            app.close()
            event.remove(Engine, "before_cursor_execute", record)
        return len(seen)

    assert 0 < schema_queries(1) == schema_queries(3)
