"""Shared fixtures: a database per test run (SQLite and PostgreSQL), cleaned per test.

PostgreSQL: one database `gov_test_<random>` is created for the whole run, migrated once,
truncated before each test, and dropped at the end. SQLite: one migrated template file per
run, copied for each test. Every test that takes `db_url` runs on both.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from gov_pipeline.db.engine import make_engine, make_sessionmaker
from gov_pipeline.db.integrity import ALL_TENANTS, APP_ROLE
from gov_pipeline.db.migrate import upgrade
from gov_pipeline.db.models import Base

# The server the run creates its own database on (trust auth on this machine).
ADMIN_URL = os.environ.get(
    "GOV_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
)
RUN_ID = uuid.uuid4().hex[:10]


def _admin_engine() -> Engine:
    return create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")


@contextmanager
def own_database(suffix: str = "") -> Iterator[str]:
    """An empty PostgreSQL database `gov_test_<run><suffix>` on the test server; its URL.
    Dropped afterwards."""
    name = f"gov_test_{RUN_ID}{suffix}"
    admin = _admin_engine()
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test run; dropped afterwards."""
    with own_database() as url:
        upgrade(url)
        yield url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


def _truncate_all(url: str) -> None:
    engine = make_engine(url)
    tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database: each test runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        target = tmp_path / "gov.db"
        shutil.copyfile(template, target)
        return f"sqlite:///{target}"
    url: str = request.getfixturevalue("postgres_url")
    _truncate_all(url)
    return url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """A raw writer's connection (someone with psql or sqlite3): the URL's user."""
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def app_engine(db_url: str) -> Iterator[Engine]:
    """The application's engine: on PostgreSQL under the row-level security role, as the
    application connects by default (GOV_PIPELINE_DB_ROLE)."""
    eng = make_engine(db_url, role=APP_ROLE)
    yield eng
    eng.dispose()


@pytest.fixture
def sessions(app_engine: Engine) -> sessionmaker[Session]:
    return make_sessionmaker(app_engine, tenant=ALL_TENANTS)


@pytest.fixture
def tenant(sessions: sessionmaker[Session]) -> str:
    """A tenant `acme` with a second tenant `globex` beside it, for isolation tests."""
    from gov_pipeline.services.tenants import create_tenant

    with sessions.begin() as session:
        create_tenant(session, tenant_id="acme", name="Acme")
        create_tenant(session, tenant_id="globex", name="Globex")
    return "acme"


@pytest.fixture
def is_pg(db_url: str) -> bool:
    return db_url.startswith("postgresql")


# -- Redis and a Dagster instance with the Redis run coordinator ------------------------

REDIS_URL = os.environ.get("GOV_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@contextmanager
def own_redis_prefix() -> Iterator[str]:
    """A key prefix of the caller's own on the shared Redis; its keys are deleted after."""
    import redis

    prefix = f"govtest:{RUN_ID}:{uuid.uuid4().hex[:8]}"
    try:
        yield prefix
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        # The keys of queues under the prefix (or under prefixes that extend it) carry it
        # as their hash tag, `{prefix...}:rq:...`; other keys start with it.
        for pattern in (f"{{{prefix}*", f"{prefix}:*"):
            for key in client.scan_iter(pattern, count=1000):
                client.delete(key)
        client.close()


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    with own_redis_prefix() as prefix:
        yield prefix


@pytest.fixture(scope="session")
def dagster_storage_url(postgres_url: str) -> Iterator[str]:
    """A PostgreSQL database for Dagster's run storage, for this test run. The code servers
    the tests' launch-mode workers left behind are stopped before it is dropped: a code server
    asked to shut down first reads its ended runs from this database, and waits for ever once
    the database is gone."""
    with own_database("_dagster") as url:
        yield url
        stop_leftover_code_servers()


def stop_leftover_code_servers(grace_s: float = 5.0) -> int:
    """Kill this process's child `dagster api grpc` servers still alive after `grace_s`;
    returns how many were killed."""
    import signal
    import time

    def children() -> list[int]:
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):  # gone meanwhile, or unreadable
                continue
            if ppid == os.getpid() and b"dagster api grpc" in cmdline:
                found.append(int(entry.name))
        return found

    deadline = time.monotonic() + grace_s
    while children() and time.monotonic() < deadline:
        time.sleep(0.5)
    left = children()
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
    return len(left)


class RedisServer:
    """A redis-server of a test's own on a fixed free port, no persistence: stopping and
    starting it again gives an empty server at the same address."""

    def __init__(self, directory: Path, also_on: str | None = None) -> None:
        """`also_on`: an address it listens on besides 127.0.0.1 (a test host's)."""
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self.directory = directory
        self.binds = ["127.0.0.1", *([also_on] if also_on else [])]
        self.process: Any = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import subprocess
        import time

        import redis

        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", *self.binds, "--save", "",
             "--appendonly", "no", "--dir", str(self.directory),
             # A test host's clients come from its private network, not loopback.
             "--protected-mode", "no" if len(self.binds) > 1 else "yes"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(self.url).ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A started RedisServer of this test's own, stopped afterwards."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def private_redis(redis_server: RedisServer) -> str:
    """The URL of a redis-server of this test's own, for tests that flush or stop it."""
    return redis_server.url
