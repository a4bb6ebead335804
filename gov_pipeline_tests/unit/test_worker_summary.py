"""The line `gov-pipeline worker` prints when it exits: each count says what it counts."""

from __future__ import annotations

import pytest

from gov_pipeline.cli.queue import worker_summary
from gov_pipeline.coordinator.worker import WorkerStats


@pytest.mark.parametrize(
    ("stats", "expected"),
    [
        (WorkerStats(), "0 claimed, 0 finished, 0 recovered, 0 requeued, outcomes {}"),
        (
            WorkerStats(claimed=4, finished=4, requeued=3, lost=3, reconciled=3,
                        outcomes={"SUCCESS": 4}),
            "4 claimed, 4 finished, 0 recovered, 3 requeued (3 after Redis lost them), "
            "outcomes {'SUCCESS': 4}",
        ),
        (
            WorkerStats(claimed=2, finished=3, recovered=1, requeued=2, lost=1, released=2,
                        reconciled=3, outcomes={"SUCCESS": 2, "FAILURE:worker-died": 1}),
            "2 claimed, 3 finished, 1 recovered, 2 requeued (1 after Redis lost them), "
            "2 stale slots released, outcomes {'SUCCESS': 2, 'FAILURE:worker-died': 1}",
        ),
    ],
)  # fmt: skip
def test_the_summary_names_every_count(stats: WorkerStats, expected: str) -> None:
    assert worker_summary(stats, 12.34) == f"worker done in 12.3s: {expected}"
