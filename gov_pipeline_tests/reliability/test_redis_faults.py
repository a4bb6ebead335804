"""Redis faults during a burst, on a redis-server of the test's own: all its data flushed,
and the server gone for 30 s (then back, empty). Each ends with the invariant checker."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from gov_pipeline_tests.conftest import RedisServer, _truncate_all
from gov_pipeline_tests.reliability.support import (
    assert_clean,
    record,
    running_stack,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.redis]


def _mid_burst(statuses: dict[str, int]) -> bool:
    return statuses.get("SUCCESS", 0) > 0 and statuses.get("QUEUED", 0) > 0


def test_redis_flushed_during_a_burst(
    tmp_path: Path,
    postgres_url: str,
    dagster_storage_url: str,
    redis_server: RedisServer,
    redis_prefix: str,
) -> None:
    """FLUSHALL while runs wait in line and one is running: workers rebuild the queue from
    Dagster's QUEUED runs (oldest first) and every change is processed once."""
    _truncate_all(postgres_url)
    with running_stack(
        tmp_path, postgres_url, dagster_storage_url, redis_server.url, redis_prefix,
        workers=2, env={"GOV_PIPELINE_BATCH_SIZE": "8"},
    ) as s:  # fmt: skip
        s.write_updates(48)
        wait_for(lambda: _mid_burst(s.run_statuses()), 180, "runs done and runs waiting", 0.1)
        waiting = s.run_statuses().get("QUEUED", 0)
        redis.Redis.from_url(redis_server.url).flushall()
        flushed_at = time.monotonic()
        s.wait_settled(300)
        recovery = time.monotonic() - flushed_at
        report = s.check()
        assert_clean(s, report, expected_notices=s.updates)
        assert "QUEUED in Dagster but not in Redis; queued again" in s.log_tail(10**7)
        record("Redis restarted empty (FLUSHALL) during a burst",
               "test_redis_flushed_during_a_burst", s, report, recovery,
               runs_waiting_when_flushed=waiting)  # fmt: skip


def test_redis_unreachable_for_30s_during_a_burst(
    tmp_path: Path,
    postgres_url: str,
    dagster_storage_url: str,
    redis_server: RedisServer,
    redis_prefix: str,
) -> None:
    """Redis stopped for 30 s while changes keep coming: the daemon launches the new runs
    directly (fallback `launch`), workers wait it out, Redis comes back empty and the
    workers re-queue what is still QUEUED."""
    _truncate_all(postgres_url)
    with running_stack(
        tmp_path, postgres_url, dagster_storage_url, redis_server.url, redis_prefix,
        workers=2, env={"GOV_PIPELINE_BATCH_SIZE": "8"},
    ) as s:  # fmt: skip
        s.write_updates(40)
        wait_for(lambda: _mid_burst(s.run_statuses()), 180, "runs done and runs waiting", 0.1)
        redis_server.stop()
        down_at = time.monotonic()
        s.write_updates(12)  # the burst goes on during the outage
        wait_for(
            lambda: any(
                "Redis unreachable at submit" in (e.message or "")
                for run in s.c.instance.get_runs(limit=20)
                for e in s.c.instance.all_logs(run.run_id)
            ),
            120,
            "a submit to meet the outage",
        )
        # The outage lasts 30 s whatever the test observed meanwhile.
        time.sleep(max(0.0, 30 - (time.monotonic() - down_at)))
        redis_server.start()
        up_at = time.monotonic()
        s.wait_settled(300)
        recovery = time.monotonic() - up_at
        report = s.check()
        assert_clean(s, report, expected_notices=s.updates)
        direct = sum(
            1
            for run in s.c.instance.get_runs()
            if any(
                "launching this run directly" in (e.message or "")
                for e in s.c.instance.all_logs(run.run_id)
            )
        )
        assert direct > 0
        record("Redis unreachable for 30 s during a burst",
               "test_redis_unreachable_for_30s_during_a_burst", s, report, recovery,
               outage_s=30, runs_launched_directly=direct)  # fmt: skip
