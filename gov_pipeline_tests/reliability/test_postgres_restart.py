"""PostgreSQL restarted while runs are processing, on a server of the test's own (the
application database lives there; Dagster's storage stays on the shared server)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from gov_pipeline.db.migrate import upgrade
from gov_pipeline_tests.conftest import REDIS_URL
from gov_pipeline_tests.reliability.support import (
    assert_clean,
    private_postgres,
    record,
    running_stack,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


def test_postgres_restarted_during_processing(
    tmp_path: Path, dagster_storage_url: str, redis_prefix: str
) -> None:
    """`pg_ctl restart -m fast` mid-burst: connections in use are cut; the sensor's tick
    fails and the next one reads again, ops retry with backoff, pools reconnect."""
    with private_postgres() as server:
        admin = create_engine(server.admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text('CREATE DATABASE "gov_app"'))
        admin.dispose()
        app_url = server.url("gov_app")
        upgrade(app_url)
        with running_stack(
            tmp_path, app_url, dagster_storage_url, REDIS_URL, redis_prefix, workers=2,
            env={"GOV_PIPELINE_BATCH_SIZE": "8"},
        ) as s:  # fmt: skip
            s.write_updates(48)
            wait_for(
                lambda: s.run_statuses().get("SUCCESS", 0) > 0 and s.running_runs() > 0,
                180,
                "runs done and a run in flight",
                0.1,
            )
            before = s.counts()
            s.engine.dispose()
            server.restart()
            restarted_at = time.monotonic()
            s.write_updates(10)  # writers come back too
            s.wait_settled(300)
            recovery = time.monotonic() - restarted_at
            report = s.check()
            assert_clean(s, report, expected_notices=s.updates)
            assert before[1] < before[0]  # the restart met unprocessed changes
            from dagster import DagsterEventType

            retried = sum(
                len(s.c.instance.all_logs(r.run_id, of_type=DagsterEventType.STEP_UP_FOR_RETRY))
                for r in s.c.instance.get_runs()
            )
            record("PostgreSQL restarted during processing",
                   "test_postgres_restarted_during_processing", s, report, recovery,
                   processed_when_restarted=before[1], op_retries=retried)  # fmt: skip
