"""The lanes: the original system's eight Bull queues, each with its concurrency limit, its
retry rule and its timeout (pure). This is the one table. The run coordinator's `lanes`
(limits) and `lane_rules` (retries, timeouts) in dagster.yaml override it, and a run carries
the rule it was submitted with as tags, which its ops and its worker read."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any, Final

from gov_pipeline.domain.errors import InvalidInputError
from gov_pipeline.domain.retry import Backoff, RetryPolicy, backoff_text, parse_backoff

LANE_TAG: Final = "gov/queue"  # the lane of a run (the original queue's name)
ATTEMPTS_TAG: Final = "gov/attempts"  # attempts in all, the first try included
BACKOFF_TAG: Final = "gov/backoff"  # `exponential 2s`, `fixed 5s` or `none`
TIMEOUT_TAG: Final = "gov/timeout_s"  # seconds a run may run; absent or 0: no limit
# Set on a run that was stopped and failed for running too long. Its value is that run's id:
# run retries copy their parent's tags, and the tag must not speak for the retry.
TIMED_OUT_TAG: Final = "gov/timed_out"
DEFAULT_LANE: Final = "policy"  # the lane of a run without a lane tag, for its rule
# The run coordinator's lane of runs without a lane tag (unless its `default_lane` names one):
# no limit of its own; its rule is the default lane's, without a timeout.
UNTAGGED_LANE: Final = "(untagged)"


@dataclass(frozen=True)
class LaneRule:
    """What a lane's runs get: how their work is retried, and how long a run may run."""

    retry: RetryPolicy
    timeout_s: float | None = None

    def tags(self) -> dict[str, str]:
        """The rule as the run tags that carry it."""
        tags = {ATTEMPTS_TAG: str(self.retry.max_attempts), BACKOFF_TAG: backoff_text(self.retry)}
        if self.timeout_s:
            tags[TIMEOUT_TAG] = f"{self.timeout_s:g}"
        return tags


@dataclass(frozen=True)
class Lane:
    limit: int  # runs at once across all workers (-1: no limit)
    rule: LaneRule


def _rule(attempts: int, backoff: Backoff = Backoff.NONE, delay_s: float = 0.0,
          timeout_s: float | None = None) -> LaneRule:  # fmt: skip
    return LaneRule(RetryPolicy(attempts, delay_s, backoff), timeout_s)


_EXP, _FIXED = Backoff.EXPONENTIAL, Backoff.FIXED
# DOMAIN.md, "The original queues": attempts include the first try; the limit is the
# queue's planned concurrency.
LANES: Final[Mapping[str, Lane]] = MappingProxyType(
    {
        "policy": Lane(5, _rule(5, _EXP, 2.0)),
        "assessment": Lane(3, _rule(3, _FIXED, 5.0)),
        "reporting": Lane(2, _rule(2, timeout_s=300)),
        "evidence": Lane(4, _rule(5, _EXP, 3.0)),
        "notification": Lane(10, _rule(10, _FIXED, 1.0)),
        "export": Lane(2, _rule(3, timeout_s=180)),
        "audit": Lane(1, _rule(2, timeout_s=600)),
        "import": Lane(2, _rule(3, timeout_s=120)),
    }
)
DEFAULT_LIMITS: Final[Mapping[str, int]] = MappingProxyType(
    {name: lane.limit for name, lane in LANES.items()}
)
RULE_KEYS: Final = ("attempts", "backoff", "delay_seconds", "timeout_seconds")


def lane_of(tags: Mapping[str, str], default: str = DEFAULT_LANE) -> str:
    """`gov/queue` without the original `governance:` prefix; `default` when absent."""
    value = (tags.get(LANE_TAG) or default).strip()
    return value.removeprefix("governance:") or default


def lane_rule(lane: str, rules: Mapping[str, LaneRule] | None = None) -> LaneRule:
    """The rule of `lane` in `rules` (default: the table). A lane without one has the
    default lane's retries and no timeout."""
    rules = default_rules() if rules is None else rules
    if lane in rules:
        return rules[lane]
    return replace(rules.get(DEFAULT_LANE, LANES[DEFAULT_LANE].rule), timeout_s=None)


def default_rules() -> dict[str, LaneRule]:
    return {name: lane.rule for name, lane in LANES.items()}


def lane_rules(overrides: Mapping[str, Any] | None) -> dict[str, LaneRule]:
    """The table's rules with `overrides` (dagster.yaml's `lane_rules`) merged over them,
    key by key: `{lane: {attempts, backoff, delay_seconds, timeout_seconds}}`. A lane not in
    the table starts from the default lane's rule without a timeout.

    Raises:
        InvalidInputError: an entry is not a mapping, has an unknown key or a bad value.
    """
    rules = default_rules()
    # The default lane first: a lane not in the table starts from its (overridden) rule.
    entries = sorted((overrides or {}).items(), key=lambda item: item[0] != DEFAULT_LANE)
    for lane, entry in entries:
        where = f"lane_rules.{lane}"
        if not isinstance(entry, Mapping):
            raise InvalidInputError(where, f"must be a mapping of {', '.join(RULE_KEYS)}")
        unknown = sorted(set(entry) - set(RULE_KEYS))
        if unknown:
            raise InvalidInputError(where, f"unknown key(s) {unknown}; known: {RULE_KEYS}")
        rules[str(lane)] = _merged(where, lane_rule(str(lane), rules), entry)
    return rules


def _merged(where: str, base: LaneRule, entry: Mapping[str, Any]) -> LaneRule:
    retry = base.retry
    try:
        backoff = Backoff(str(entry.get("backoff", retry.backoff)).lower())
        attempts = _number(entry.get("attempts", retry.max_attempts), integer=True)
        delay = _number(entry.get("delay_seconds", retry.delay_s))
        timeout = entry.get("timeout_seconds", base.timeout_s)
        timeout_s = None if timeout in (None, 0) else _number(timeout)
        new_retry = RetryPolicy(int(attempts), delay, backoff)
    except ValueError as exc:
        raise InvalidInputError(where, f"{exc} (attempts >= 1; backoff one of "
                                f"{', '.join(Backoff)}; seconds >= 0)") from None  # fmt: skip
    return LaneRule(new_retry, timeout_s)


def _number(value: Any, *, integer: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"not a number: {value!r}")
    if integer and value != int(value):
        raise ValueError(f"not a whole number: {value!r}")
    if value < 0:
        raise ValueError(f"negative: {value!r}")
    return float(value)


def rule_of_run(
    tags: Mapping[str, str],
    rules: Mapping[str, LaneRule] | None = None,
    default_lane: str = DEFAULT_LANE,
) -> LaneRule:
    """The rule a run goes by: its rule tags (set at submit, or by whoever launched it),
    and for each one missing or malformed its lane's rule in `rules` (default: the table)."""
    base = lane_rule(lane_of(tags, default_lane), rules)
    retry = base.retry
    raw = tags.get(ATTEMPTS_TAG, "").strip()
    attempts = int(raw) if raw.isdigit() and int(raw) >= 1 else retry.max_attempts
    backoff, delay = _tagged_backoff(tags.get(BACKOFF_TAG)) or (retry.backoff, retry.delay_s)
    timeout_s = _tagged_seconds(tags.get(TIMEOUT_TAG), base.timeout_s)
    return LaneRule(RetryPolicy(attempts, delay, backoff), timeout_s)


def _tagged_backoff(value: str | None) -> tuple[Backoff, float] | None:
    try:
        return None if value is None else parse_backoff(value)
    except ValueError:
        return None


def _tagged_seconds(value: str | None, default: float | None) -> float | None:
    """A timeout tag's seconds (`0`: none), or `default` when absent or malformed."""
    try:
        seconds = default if value is None else float(value)
    except ValueError:
        return default
    if seconds is not None and (not math.isfinite(seconds) or seconds < 0):
        return default
    return seconds or None
