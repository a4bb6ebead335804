"""The soak, reduced for `make test`: 300 changes, three workers, two of them
killed with SIGKILL while runs are in flight; nothing lost, nothing duplicated."""

from __future__ import annotations

import pytest

from gov_pipeline_tests.reliability.soak import run_soak

pytestmark = [pytest.mark.e2e, pytest.mark.redis]


def test_reduced_soak_with_workers_killed_at_random() -> None:
    figures = run_soak(
        300, workers=3, policies=30, max_kills=2, kill_every=(4.0, 8.0), per_transaction=10,
        batch_size=25, seed=7, timeout_s=600, say=lambda line: None, name="test_reduced_soak",
    )  # fmt: skip
    assert figures["report_ok"], figures["violations"]
    assert (figures["lost"], figures["duplicated"]) == (0, 0)
    assert figures["kills"] == 2
    assert figures["runs_recovered"] == figures["runs_failed_by_kills"], figures["unrecovered"]
    assert figures["notices_completed"] == figures["updates"] == 300
    # 30 creations + 300 updates + the 300 tasks their notices create (tasks are governed
    # records: each creation is a change too), all processed.
    assert figures["changes"] == 630
