"""The synchronous floor: changes processed per second by `process_pending`.

Usage: python -m benchmarks.sync_floor [--n 10000] [--workflows 20] [--postgres-url URL]
       [--sqlite/--no-sqlite] [--profile] [--json PATH]

The workload is "imported policies then status moves": N/2 policies are created through the
policy service (one `created` change each), then each is moved draft -> in_review (one
`status_changed` change each), N changes in all. The writes are timed apart; the figure is the
time `process_pending` takes from the first change to the last, against `--workflows` active
workflows that only do domain work (notify, create_task, assign: no approvals, no webhooks).

Each database is created for the run and dropped afterwards (PostgreSQL: `gov_bench_<random>`
on the server named by `--postgres-url`; SQLite: a file in a temporary directory).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import re
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from sqlalchemy import create_engine, event, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

import gov_pipeline
from benchmarks.limit_floor import limit_row
from gov_pipeline.config import Settings, load_settings
from gov_pipeline.db.engine import make_engine, make_sessionmaker
from gov_pipeline.db.integrity import ALL_TENANTS, APP_ROLE
from gov_pipeline.db.migrate import upgrade
from gov_pipeline.db.models import EntityChange, WorkflowExecution
from gov_pipeline.domain.definitions import parse_definition
from gov_pipeline.domain.retry import RetryPolicy
from gov_pipeline.runners.sync import ProcessStats, process_pending
from gov_pipeline.services import policies, tenants
from gov_pipeline.services.skips import skipped_total, with_skips
from gov_pipeline.services.workflows import COMPILED, apply_definition

TENANT = "bench"
CHUNK = 500
PROGRESS_EVERY_S = 2.0
POLICY_TYPES = ("Information Security", "Privacy", "HR", "Finance", "Operations")
RISK_LEVELS = ("low", "medium", "high")
OWNERS = ("dave", "erin", "frank")
USERS: dict[str, tuple[str, ...]] = {
    "alice": ("compliance_officer",),
    "bob": ("admin",),
    "carol": ("compliance_officer", "admin"),
    "dave": ("policy_owner",),
    "erin": ("policy_owner",),
    "frank": (),
}
DEFAULT_POSTGRES_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"


# --- the workflows ----------------------------------------------------------------------------

IN_REVIEW = {"field": "new.status", "op": "changed_to", "value": "in_review"}
NOTIFY_OFFICERS = {"type": "notify", "roles": ["compliance_officer"], "title": "{entity.title}"}

# (name, trigger, conditions, actions), interleaved by trigger so `--workflows k < 20` keeps a
# mix. On a typical change about two of them match (measured: see the printed counts).
TEMPLATES: list[tuple[str, str, Any, list[dict[str, Any]]]] = [
    ("create-infosec", "on_create", {"policy_type": "Information Security"}, [NOTIFY_OFFICERS]),
    ("review-started", "on_status_change", IN_REVIEW, [
        {"type": "notify", "roles": ["compliance_officer", "admin"],
         "title": "Review started: {entity.title}", "message": "{old.status} -> {new.status}"},
    ]),
    ("update-hr", "on_update", {"policy_type": "HR", "new.status": "in_review"}, [
        {"type": "notify", "users": ["alice", "bob"], "title": "HR policy in review"},
    ]),
    ("create-privacy-hr-task", "on_create",
     {"field": "policy_type", "op": "in", "value": ["Privacy", "HR"]}, [
        {"type": "create_task", "title": "Classify {entity.title}", "assignee": "owner",
         "due_in_days": 14},
    ]),
    ("review-infosec", "on_status_change",
     {"all": [IN_REVIEW, {"field": "policy_type", "op": "eq", "value": "Information Security"}]},
     [
        {"type": "create_task", "title": "Security review", "assignee": "alice",
         "priority": "high", "due_in_days": 7},
        NOTIFY_OFFICERS,
    ]),
    ("update-owner-changed", "on_update", {"field": "owner_id", "op": "changed"}, [
        {"type": "notify", "include_owner": True, "title": "You now own {entity.title}"},
    ]),
    ("create-high-risk", "on_create", {"all": [
        {"field": "entity.custom_fields.risk_level", "op": "eq", "value": "high"},
        {"field": "policy_type", "op": "in", "value": ["Finance", "Operations"]},
    ]}, [
        {"type": "notify", "roles": ["admin"], "priority": "high", "title": "High risk"},
        {"type": "assign", "user": "carol"},
    ]),
    ("review-privacy-or-high", "on_status_change", {"any": [
        {"field": "policy_type", "op": "eq", "value": "Privacy"},
        {"field": "entity.custom_fields.risk_level", "op": "eq", "value": "high"},
    ]}, [{"type": "assign", "user": "carol"}]),
    ("update-title-changed", "on_update", {"field": "title", "op": "changed"}, [
        NOTIFY_OFFICERS,
    ]),
    ("create-ack-or-gdpr", "on_create", {"any": [
        {"field": "entity.requires_acknowledgment", "op": "eq", "value": True},
        {"field": "entity.tags", "op": "contains", "value": "gdpr"},
    ]}, [{"type": "notify", "include_owner": True, "title": "Acknowledgement needed"}]),
    ("review-published", "on_status_change",
     {"field": "new.status", "op": "changed_to", "value": "published"},
     [{"type": "notify", "include_owner": True, "title": "Published"}]),
    ("update-finance-high", "on_update", {"all": [
        {"policy_type": "Finance"}, {"entity.custom_fields.risk_level": "high"},
    ]}, [{"type": "create_task", "title": "Finance risk check", "assignee": "bob"}]),
    ("create-operations", "on_create", {"not": {
        "field": "policy_type", "op": "in",
        "value": ["Information Security", "Privacy", "HR", "Finance"],
    }}, [{"type": "assign", "user": "erin"}]),
    ("review-not-low", "on_status_change", {"all": [
        IN_REVIEW,
        {"not": {"field": "entity.custom_fields.risk_level", "op": "in",
                 "value": ["low", "medium"]}},
    ]}, [
        {"type": "notify", "include_owner": True, "roles": ["admin"], "title": "Risky review"},
    ]),
    ("update-deleted", "on_update", {"field": "deleted_at", "op": "changed"}, [
        {"type": "notify", "roles": ["admin"], "title": "Deleted"},
    ]),
    ("create-finance-ack", "on_create",
     {"policy_type": "Finance", "entity.requires_acknowledgment": True}, [
        {"type": "create_task", "title": "Collect acknowledgements", "assignee": "owner"},
        {"type": "notify", "users": ["bob"], "title": "Finance acknowledgement"},
    ]),
    ("review-from-approved", "on_status_change",
     {"field": "new.status", "op": "changed_from", "value": "approved"},
     [{"type": "notify", "roles": ["compliance_officer"], "title": "Back to review"}]),
    ("update-content-changed", "on_update", {"field": "content", "op": "changed"}, [
        {"type": "create_task", "title": "Re-read {entity.title}", "assignee": "owner"},
    ]),
    ("create-published", "on_create",
     {"field": "new.status", "op": "changed_to", "value": "published"},
     [NOTIFY_OFFICERS]),
    ("create-hr-draft", "on_create", {"all": [
        {"field": "new.status", "op": "changed_to", "value": "draft"},
        {"field": "policy_type", "op": "eq", "value": "HR"},
    ]}, [{"type": "notify", "roles": ["admin"], "title": "New HR draft {entity.title}"}]),
]  # fmt: skip


def definitions(count: int) -> list[dict[str, Any]]:
    """`count` workflow definitions for tenant `bench`, cycling through the templates."""
    found = []
    for i in range(count):
        name, trigger, conditions, actions = TEMPLATES[i % len(TEMPLATES)]
        round_ = i // len(TEMPLATES)
        found.append(
            {
                "name": name if round_ == 0 else f"{name}-{round_}",
                "tenant_id": TENANT,
                "type": "notification",
                "trigger": trigger,
                "conditions": conditions,
                "actions": actions,
                "owner_id": "carol",
            }
        )
    return found


# --- setup and workload -----------------------------------------------------------------------


def policy_fields(i: int) -> dict[str, Any]:
    return {
        "title": f"Imported policy {i}",
        "policy_type": POLICY_TYPES[i % len(POLICY_TYPES)],
        "owner_id": OWNERS[i % len(OWNERS)],
        "content": "x" * 200,
        "tags": ["gdpr"] if i % 7 == 0 else ["imported"],
        "custom_fields": {"risk_level": RISK_LEVELS[(i // 5) % len(RISK_LEVELS)]},
        "requires_acknowledgment": i % 4 == 0,
    }


def prepare(sessions: sessionmaker[Session], workflows: int) -> None:
    with sessions.begin() as session:
        tenants.create_tenant(session, tenant_id=TENANT, name="Benchmark")
        for user, roles in USERS.items():
            tenants.upsert_user(session, tenant_id=TENANT, user_id=user, roles=roles)
        for data in definitions(workflows):
            apply_definition(session, parse_definition(data), actor="bench")


def write_changes(sessions: sessionmaker[Session], n: int) -> dict[str, float]:
    """Import n/2 policies, then move each draft -> in_review: n changes."""
    half = n // 2
    importer = policies.Actor("importer")
    ids: list[int] = []
    t0 = time.perf_counter()
    for start in range(0, half, CHUNK):
        with sessions.begin() as session:
            for i in range(start, min(start + CHUNK, half)):
                policy = policies.create_policy(
                    session, tenant_id=TENANT, fields=policy_fields(i), actor=importer
                )
                ids.append(policy.id)
    t1 = time.perf_counter()
    reviewer = policies.Actor("alice")
    for start in range(0, len(ids), CHUNK):
        with sessions.begin() as session:
            for pid in ids[start : start + CHUNK]:
                policies.transition_status(
                    session,
                    tenant_id=TENANT,
                    policy_id=pid,
                    to_status="in_review",
                    actor=reviewer,
                )
    t2 = time.perf_counter()
    return {"import_s": t1 - t0, "transitions_s": t2 - t1, "writes_s": t2 - t0}


def _progress(label: str, n: int) -> Callable[[ProcessStats], None]:
    last = [0.0]

    def report(stats: ProcessStats) -> None:
        now = time.perf_counter()
        if now - last[0] < PROGRESS_EVERY_S:
            return
        last[0] = now
        rate = stats.changes / stats.seconds if stats.seconds else 0.0
        print(
            f"  [{label}] {stats.changes}/{n} changes, {stats.executions} executions run, "
            f"{rate:,.0f} changes/s",
            file=sys.stderr,
            flush=True,
        )

    return report


def _count_by_status(sessions: sessionmaker[Session]) -> dict[str, int]:
    """Executions by status, the changes' skip rows counted as `skipped`."""
    with sessions.begin() as session:
        rows = session.execute(
            select(WorkflowExecution.status, func.count()).group_by(WorkflowExecution.status)
        ).all()
        skipped = skipped_total(session)
    return with_skips({str(status): int(count) for status, count in rows}, skipped)


def _settings(url: str, home: Path) -> Settings:
    COMPILED.clear()  # workflow ids restart in every database
    return load_settings({"GOV_PIPELINE_DATABASE_URL": url, "GOV_PIPELINE_HOME": str(home)})


def measure(
    label: str,
    url: str,
    n: int,
    workflows: int,
    home: Path,
    profiler: cProfile.Profile | None = None,
) -> dict[str, Any]:
    """Set up `url` (already migrated), write n changes, time their processing."""
    settings = _settings(url, home)
    engine = make_engine(url, role=APP_ROLE)
    sessions = make_sessionmaker(engine, tenant=ALL_TENANTS)
    statements = StatementCounter()
    try:
        prepare(sessions, workflows)
        print(f"[{label}] writing {n} changes ...", file=sys.stderr, flush=True)
        writes = write_changes(sessions, n)
        with sessions.begin() as session:
            changes = int(session.scalar(select(func.count()).select_from(EntityChange)) or 0)
        print(
            f"[{label}] {changes} changes written in {writes['writes_s']:.1f} s; processing ...",
            file=sys.stderr,
            flush=True,
        )
        if profiler is not None:
            profiler.enable()
        event.listen(engine, "before_cursor_execute", statements)
        stats = process_pending(
            sessions,
            settings,
            consumer="bench",
            batch_size=500,
            retry=RetryPolicy(max_attempts=3, delay_s=0.0),
            on_progress=_progress(label, changes),
        )
        event.remove(engine, "before_cursor_execute", statements)
        if profiler is not None:
            profiler.disable()
        by_status = _count_by_status(sessions)
    finally:
        engine.dispose()
    return {
        "database": label,
        "changes_written": changes,
        "changes": stats.changes,
        "workflows": workflows,
        "executions": by_status,
        "executions_run": stats.executions,
        "seconds": stats.seconds,
        "changes_per_s": stats.changes / stats.seconds if stats.seconds else 0.0,
        "executions_per_s": stats.executions / stats.seconds if stats.seconds else 0.0,
        "statements": statements.count,
        "statements_per_change": statements.count / stats.changes if stats.changes else 0.0,
        "statement_kinds": dict(statements.kinds.most_common()),
        **writes,
    }


class StatementCounter:
    """Counts the statements an engine sends (an executemany counts once: one round trip)."""

    def __init__(self) -> None:
        self.count = 0
        self.kinds: Counter[str] = Counter()

    def __call__(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        self.count += 1
        self.kinds[statement_kind(statement)] += 1


def statement_kind(statement: str) -> str:
    """`INSERT INTO tasks`, `SELECT ... FROM policies`, `UPDATE workflow_executions`: what a
    statement does to which table, for the breakdown of statements per change."""
    words = statement.split()
    verb = words[0].upper() if words else ""
    if "set_config(" in statement:
        return "SELECT set_config"
    table = _TABLE.search(statement)
    return f"{verb} {table.group(1) if table else ''}".strip()


_TABLE = re.compile(r"(?:INTO|FROM|UPDATE)\s+\"?([a-z_]+)", re.IGNORECASE)


@contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    """A fresh, migrated `gov_bench_<random>` database; dropped WITH (FORCE) afterwards."""
    name = f"gov_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        url = make_url(admin_url).set(database=name).render_as_string(False)
        upgrade(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def sqlite_database() -> Iterator[tuple[str, Path]]:
    with TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        upgrade(url)
        yield url, Path(tmp)


# --- profile ----------------------------------------------------------------------------------


def top_functions(profiler: cProfile.Profile, limit: int = 15) -> list[dict[str, Any]]:
    """The `limit` functions defined in gov_pipeline with the most cumulative time."""
    root = str(Path(gov_pipeline.__file__).resolve().parent)
    stats = pstats.Stats(profiler)
    rows = []
    entries: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    for (filename, line, name), (_cc, calls, tottime, cumtime, _callers) in entries.items():
        if not str(Path(filename).resolve()).startswith(root):
            continue
        where = str(Path(filename).resolve())[len(root) - len("gov_pipeline") :]
        rows.append(
            {
                "function": f"{where}:{line}({name})",
                "calls": calls,
                "tottime_s": tottime,
                "cumtime_s": cumtime,
            }
        )
    rows.sort(key=lambda r: r["cumtime_s"], reverse=True)
    return rows[:limit]


def profile(admin_url: str, n: int, workflows: int) -> dict[str, Any]:
    profiler = cProfile.Profile()
    with postgres_database(admin_url) as url, TemporaryDirectory() as home:
        result = measure("postgres-profile", url, n, workflows, Path(home), profiler)
    return {"run": result, "top": top_functions(profiler)}


# --- output -----------------------------------------------------------------------------------


def print_table(results: list[dict[str, Any]]) -> None:
    header = (
        f"{'database':10} {'changes':>8} {'wflows':>6} {'completed':>9} {'skipped':>8} "
        f"{'failed':>6} {'seconds':>8} {'changes/s':>10} {'exec/s':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        ex = r["executions"]
        print(
            f"{r['database']:10} {r['changes']:8d} {r['workflows']:6d} "
            f"{ex.get('completed', 0):9d} {ex.get('skipped', 0):8d} {ex.get('failed', 0):6d} "
            f"{r['seconds']:8.2f} {r['changes_per_s']:10.1f} {r['executions_per_s']:8.1f}"
        )
    print("(exec/s: executions run to completion per second; skipped: the workflows the changes")
    print(" did not match, one skip row per change)")
    for r in results:
        ex = ", ".join(f"{k} {v}" for k, v in sorted(r["executions"].items()))
        print(
            f"{r['database']}: writes (not timed above) import {r['import_s']:.1f} s + "
            f"transitions {r['transitions_s']:.1f} s; executions by status: {ex}"
        )


def print_limit(limit: dict[str, Any], postgres: dict[str, Any]) -> None:
    rows = ", ".join(f"{t} {n}" for t, n in limit["rows"].items() if n)
    print(
        f"limit (the PostgreSQL run's rows written straight with COPY, no engine): "
        f"{limit['changes']} changes in {limit['seconds']:.2f} s = "
        f"{limit['changes_per_s']:,.0f} changes/s ({limit['rows_per_s']:,.0f} rows/s; {rows})"
    )
    ratio = postgres["changes_per_s"] / limit["changes_per_s"] if limit["changes_per_s"] else 0
    print(
        f"postgres / limit = {ratio:.3f}; statements per change "
        f"{postgres['statements_per_change']:.1f} ({postgres['statements']} in all)"
    )


def print_statement_kinds(result: dict[str, Any], limit: int = 12) -> None:
    """The statements of a run by kind, most frequent first, each per change."""
    changes = result["changes"] or 1
    kinds = list(result["statement_kinds"].items())[:limit]
    print("statements by kind (per change): " + "; ".join(
        f"{kind} {count} ({count / changes:.2f})" for kind, count in kinds
    ))  # fmt: skip


def print_profile(prof: dict[str, Any]) -> None:
    run = prof["run"]
    print()
    print(
        f"where the time goes (cProfile, PostgreSQL, {run['changes']} changes, "
        f"{run['seconds']:.1f} s under the profiler; top 15 gov_pipeline functions by "
        "cumulative time)"
    )
    print(f"{'cumtime s':>9} {'tottime s':>9} {'calls':>8}  function")
    for row in prof["top"]:
        print(
            f"{row['cumtime_s']:9.2f} {row['tottime_s']:9.2f} {row['calls']:8d}  {row['function']}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="changes to process")
    parser.add_argument("--workflows", type=int, default=20, help="active workflows")
    parser.add_argument(
        "--postgres-url", default=DEFAULT_POSTGRES_URL,
        help="server to create the benchmark database on",
    )  # fmt: skip
    parser.add_argument(
        "--sqlite", action=argparse.BooleanOptionalAction, default=True,
        help="also measure SQLite (default: yes)",
    )  # fmt: skip
    parser.add_argument(
        "--profile", action="store_true",
        help="also profile a separate N=2000 PostgreSQL run",
    )  # fmt: skip
    parser.add_argument(
        "--limit", action=argparse.BooleanOptionalAction, default=True,
        help="also time the PostgreSQL run's rows written straight (the limit row)",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    results: list[dict[str, Any]] = []
    limit = None
    with postgres_database(args.postgres_url) as url, TemporaryDirectory() as home:
        results.append(measure("postgres", url, args.n, args.workflows, Path(home)))
        if args.limit:
            print("[limit] writing the same rows straight ...", file=sys.stderr, flush=True)
            limit = limit_row(args.postgres_url, url, 0)
    if args.sqlite:
        with sqlite_database() as (url, home):
            results.append(measure("sqlite", url, args.n, args.workflows, home))
    prof = profile(args.postgres_url, 2000, args.workflows) if args.profile else None

    print()
    print(
        f"sync floor: process_pending over {args.n} changes (imported policies, then status "
        f"moves) against {args.workflows} active workflows, batch 500"
    )
    print_table(results)
    if limit is not None:
        print_limit(limit, results[0])
    print_statement_kinds(results[0])
    if prof is not None:
        print_profile(prof)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "n": args.n, "workflows": args.workflows, "results": results, "limit": limit,
            "profile": prof,
        }  # fmt: skip
        args.json.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
