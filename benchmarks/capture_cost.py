"""What change capture costs: insert and update N policies with the triggers and without.

Usage: python -m benchmarks.capture_cost [--n 10000] [--postgres-url URL] [--json PATH]

Each database is created for the run and dropped afterwards. Both variants run in the same
process against the same server, alternating, and the best of `--rounds` is kept.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from sqlalchemy import Engine, create_engine, insert, text, update
from sqlalchemy.engine import make_url

from gov_pipeline.db.capture import install_capture, uninstall_capture
from gov_pipeline.db.engine import make_engine
from gov_pipeline.db.migrate import upgrade
from gov_pipeline.db.models import Base, Policy, Tenant

CHUNK = 1000


def _rows(n: int) -> list[dict[str, Any]]:
    return [
        {
            "tenant_id": "bench", "title": f"Policy {i}", "policy_type": "Security",
            "content": "x" * 200, "business_units": ["bu1"], "status": "draft",
            "version": "1.0", "version_number": 1, "tags": ["a", "b"],
            "custom_fields": {"k": i}, "requires_acknowledgment": False,
        }
        for i in range(n)
    ]  # fmt: skip


def _reset(engine: Engine) -> None:
    with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())
        conn.execute(insert(Tenant).values(tenant_id="bench", name="bench"))


def _run_once(engine: Engine, n: int) -> dict[str, float]:
    rows = _rows(n)
    t0 = time.perf_counter()
    with engine.begin() as conn:
        for i in range(0, n, CHUNK):
            conn.execute(insert(Policy), rows[i : i + CHUNK])
    t1 = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(update(Policy).values(status="in_review", title=Policy.title + " v2"))
    t2 = time.perf_counter()
    return {"insert_s": t1 - t0, "update_s": t2 - t1, "total_s": t2 - t0}


def measure(url: str, n: int, rounds: int) -> dict[str, Any]:
    engine = make_engine(url)
    best: dict[str, dict[str, float]] = {}
    try:
        for _ in range(rounds):
            for variant in ("with_triggers", "without_triggers"):
                _reset(engine)
                with engine.begin() as conn:
                    if variant == "with_triggers":
                        install_capture(conn)
                    else:
                        uninstall_capture(conn)
                result = _run_once(engine, n)
                with engine.connect() as conn:
                    count = conn.execute(text("SELECT count(*) FROM entity_changes")).scalar_one()
                result["change_rows"] = float(count)
                if variant not in best or result["total_s"] < best[variant]["total_s"]:
                    best[variant] = result
        with engine.begin() as conn:
            install_capture(conn)
    finally:
        engine.dispose()
    ratio = best["with_triggers"]["total_s"] / best["without_triggers"]["total_s"]
    return {"n": n, **best, "ratio": ratio}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--postgres-url", default="postgresql+psycopg2://postgres@127.0.0.1:5432/test",
        help="server to create the benchmark database on",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    results: dict[str, Any] = {}
    with TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        upgrade(url)
        results["sqlite"] = measure(url, args.n, args.rounds)

    name = f"gov_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(args.postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        url = make_url(args.postgres_url).set(database=name).render_as_string(False)
        upgrade(url)
        results["postgres"] = measure(url, args.n, args.rounds)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    print(f"change capture cost: insert {args.n} policies, then update all {args.n}")
    print(f"{'database':10} {'variant':18} {'insert s':>9} {'update s':>9} {'total s':>9}")
    for db, res in results.items():
        for variant in ("without_triggers", "with_triggers"):
            r = res[variant]
            times = f"{r['insert_s']:9.3f} {r['update_s']:9.3f} {r['total_s']:9.3f}"
            print(f"{db:10} {variant:18} {times}  ({int(r['change_rows'])} change rows)")
        print(f"{db:10} {'ratio with/without':18} {res['ratio']:29.2f}x")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
