"""The lane table (domain/lanes.py): the original queues' limits, retries and timeouts, the
waits Bull and Dagster compute from them (the same), dagster.yaml's overrides, the rule a
run carries in its tags, and the operations guide's table of it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from gov_pipeline.coordinator.queue import DEFAULT_LANES
from gov_pipeline.coordinator.run_coordinator import RedisRunCoordinator
from gov_pipeline.domain.errors import InvalidInputError
from gov_pipeline.domain.lanes import (
    LANES,
    TIMEOUT_TAG,
    LaneRule,
    lane_rule,
    lane_rules,
    rule_of_run,
)
from gov_pipeline.domain.retry import Backoff, RetryPolicy
from gov_pipeline.orchestration.common import POLICY_RETRY, dagster_retry_policy

ROOT = Path(__file__).resolve().parents[2]

# DOMAIN.md, "The original queues": lane, concurrency, attempts, backoff, delay, timeout.
ORIGINAL = [
    ("policy", 5, 5, "exponential", 2, None),
    ("assessment", 3, 3, "fixed", 5, None),
    ("reporting", 2, 2, "none", 0, 300),
    ("evidence", 4, 5, "exponential", 3, None),
    ("notification", 10, 10, "fixed", 1, None),
    ("export", 2, 3, "none", 0, 180),
    ("audit", 1, 2, "none", 0, 600),
    ("import", 2, 3, "none", 0, 120),
]
# The wait before each retry, in seconds.
WAITS = {
    "policy": [2, 6, 14, 30],
    "assessment": [5, 5],
    "reporting": [0],
    "evidence": [3, 9, 21, 45],
    "notification": [1] * 9,
    "export": [0, 0],
    "audit": [0],
    "import": [0, 0],
}


def bull_delay(backoff: str, delay_s: float, attempts_made: int) -> float:
    """Bull's lib/backoffs.js (v3), in seconds: `fixed` returns the delay; `exponential`
    returns Math.round((2^attemptsMade - 1) * delay) (ms), where moveToFailed has counted the
    failed attempt in attemptsMade before it asks; no backoff retries at once."""
    if backoff == "exponential":
        return round((2**attempts_made - 1) * delay_s * 1000) / 1000
    return delay_s if backoff == "fixed" else 0.0


@pytest.mark.parametrize(("lane", "limit", "attempts", "backoff", "delay", "timeout"), ORIGINAL)
def test_the_table_is_the_original_queues(
    lane: str, limit: int, attempts: int, backoff: str, delay: float, timeout: int | None
) -> None:
    rule = LANES[lane].rule
    assert LANES[lane].limit == limit == DEFAULT_LANES[lane]
    assert (rule.retry.max_attempts, str(rule.retry.backoff), rule.retry.delay_s) == (
        attempts,
        backoff,
        delay,
    )
    assert rule.timeout_s == timeout


@pytest.mark.parametrize("lane", sorted(WAITS))
def test_each_lanes_waits_are_bulls_and_dagsters(lane: str) -> None:
    retry = LANES[lane].rule.retry
    ours = [retry.delay(n) for n in range(1, retry.max_attempts)]
    assert ours == WAITS[lane]
    assert ours == [
        bull_delay(retry.backoff, retry.delay_s, n) for n in range(1, retry.max_attempts)
    ]
    # Dagster's op RetryPolicy, as the ops' retries build it: the same retries, the same waits
    # (its step retry asks calculate_delay(previous attempts + 1)).
    dagster = dagster_retry_policy(retry)
    assert dagster.max_retries == retry.max_attempts - 1
    assert [dagster.calculate_delay(n) for n in range(1, retry.max_attempts)] == ours


def test_the_static_policy_retry_is_the_policy_lanes() -> None:
    assert (POLICY_RETRY.max_retries, POLICY_RETRY.delay) == (4, 2)
    assert [POLICY_RETRY.calculate_delay(n) for n in range(1, 5)] == WAITS["policy"]


def test_the_default_retry_policy_is_the_policy_lanes() -> None:
    assert RetryPolicy() == LANES["policy"].rule.retry
    assert RetryPolicy(3, 0.5).delay(2) == 1.5  # exponential: (2^2 - 1) x 0.5


@pytest.mark.parametrize(
    ("overrides", "lane", "expected"),
    [
        ({"export": {"timeout_seconds": 30}}, "export", ("3 attempts, none", 30)),
        ({"export": {"timeout_seconds": 0}}, "export", ("3 attempts, none", None)),
        ({"import": {"timeout_seconds": None}}, "import", ("3 attempts, none", None)),
        ({"notification": {"attempts": 4}}, "notification", ("4 attempts, fixed 1s", None)),
        (
            {"audit": {"backoff": "fixed", "delay_seconds": 2}},
            "audit",
            ("2 attempts, fixed 2s", 600),
        ),
        # a lane not in the table starts from the policy lane's (overridden) rule, no timeout
        ({"custom": {}, "policy": {"attempts": 2}}, "custom", ("2 attempts, exponential 2s", None)),
        ({}, "unknown", ("5 attempts, exponential 2s", None)),
    ],
    ids=["timeout", "timeout 0", "timeout null", "attempts", "backoff", "new lane", "absent"],
)
def test_dagster_yaml_overrides_merge_key_by_key(
    overrides: dict[str, Any], lane: str, expected: tuple[str, float | None]
) -> None:
    rule = lane_rule(lane, lane_rules(overrides))
    assert (rule.retry.describe(), rule.timeout_s) == expected


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"export": 3}, "lane_rules.export: must be a mapping"),
        ({"export": {"timeout": 3}}, "unknown key(s) ['timeout']"),
        ({"export": {"attempts": 0}}, "lane_rules.export:"),
        ({"export": {"attempts": 1.5}}, "not a whole number"),
        ({"export": {"backoff": "linear"}}, "backoff one of none, fixed, exponential"),
        ({"export": {"delay_seconds": -1}}, "negative"),
        ({"export": {"timeout_seconds": "soon"}}, "not a number"),
    ],
)
def test_a_malformed_override_is_refused_naming_the_lane(
    overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidInputError) as caught:
        lane_rules(overrides)
    assert message in str(caught.value)


def test_the_coordinator_refuses_a_malformed_override_when_dagster_yaml_loads() -> None:
    config = {"redis_url": "redis://x", "key_prefix": "x", "lane_rules": {"import": {"x": 1}}}
    with pytest.raises(InvalidInputError, match=r"lane_rules\.import"):
        RedisRunCoordinator.from_config_value(None, config)  # type: ignore[arg-type]


def test_a_run_goes_by_its_tags_then_its_lanes_rule() -> None:
    rules = lane_rules({"import": {"timeout_seconds": 3}})
    stamped = lane_rule("import", rules).tags()
    assert stamped == {"gov/attempts": "3", "gov/backoff": "none", TIMEOUT_TAG: "3"}
    assert rule_of_run({"gov/queue": "import", **stamped}) == LaneRule(
        RetryPolicy(3, 0, Backoff.NONE), 3
    )
    # no tags: the lane's rule; `governance:` prefixes and the default lane as the coordinator
    assert rule_of_run({"gov/queue": "governance:assessment"}) == LANES["assessment"].rule
    assert rule_of_run({}) == LANES["policy"].rule
    assert rule_of_run({"gov/queue": "import"}, rules).timeout_s == 3
    # what a launcher set wins; malformed tags fall back, tag by tag
    tags = {"gov/queue": "import", "gov/attempts": "7", "gov/backoff": "fixed 0.5s"}
    assert rule_of_run(tags).retry == RetryPolicy(7, 0.5, Backoff.FIXED)
    assert rule_of_run({**tags, TIMEOUT_TAG: "0"}).timeout_s is None
    odd = {"gov/queue": "import", "gov/attempts": "0", "gov/backoff": "soon", TIMEOUT_TAG: "-1"}
    assert rule_of_run(odd) == LANES["import"].rule


def _guide_table() -> dict[str, list[str]]:
    """The per-lane table of docs/operations.md, by lane."""
    text = (ROOT / "docs" / "operations.md").read_text()
    header = "| lane | limit | attempts | backoff | waits before the retries | timeout |"
    rows = text.split(header, 1)[1].split("\n\n", 1)[0].strip().splitlines()[1:]
    cells = [[c.strip().strip("`") for c in row.strip("|").split("|")] for row in rows]
    return {row[0]: row[1:] for row in cells}


def test_the_operations_guide_gives_the_table_and_its_waits() -> None:
    table = _guide_table()
    assert sorted(table) == sorted(LANES)
    for lane, (limit, attempts, backoff, waits, timeout) in table.items():
        rule = LANES[lane].rule
        assert int(limit) == LANES[lane].limit, lane
        assert int(attempts) == rule.retry.max_attempts, lane
        assert backoff == ("—" if rule.retry.backoff is Backoff.NONE else
                           f"{rule.retry.backoff} {rule.retry.delay_s:g} s"), lane  # fmt: skip
        numbers = [float(n) for n in re.findall(r"[\d.]+", waits)]
        expected = WAITS[lane] if len(set(WAITS[lane])) > 1 else WAITS[lane][:1]
        assert numbers[: len(expected)] == expected, (lane, waits)
        assert timeout == ("—" if rule.timeout_s is None else f"{rule.timeout_s:g} s"), lane
