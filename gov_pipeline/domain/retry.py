"""Retry policies: attempts and the wait between them (pure), in the shape of the original
system's Bull queues, which Dagster's op retries share (docs/operations.md, "Retries and
timeouts per lane")."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum


class Backoff(StrEnum):
    """How the wait before a retry grows."""

    NONE = "none"  # retry at once (a Bull job without `backoff`)
    FIXED = "fixed"  # `delay_s` before every retry
    EXPONENTIAL = "exponential"  # (2^n - 1) x `delay_s` after the n-th failed attempt


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts include the first try. The defaults are the policy queue's: 5 attempts,
    exponential backoff from 2 s (waits of 2, 6, 14 and 30 s)."""

    max_attempts: int = 5
    delay_s: float = 2.0
    backoff: Backoff = Backoff.EXPONENTIAL

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.delay_s < 0:
            raise ValueError(f"a retry policy needs attempts >= 1 and a delay >= 0: {self}")

    @property
    def max_retries(self) -> int:
        """Retries after the first try (Dagster's `max_retries`)."""
        return self.max_attempts - 1

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1 is the first try).

        Bull's `backoffs.calculate(backoff, attemptsMade)` with `attemptsMade` = `attempt`
        (it counts the failed attempt before asking), and Dagster's
        `RetryPolicy.calculate_delay(attempt)` (it passes the previous attempts + 1): both
        give `delay_s` for fixed and (2^attempt - 1) x `delay_s` for exponential. Rounded
        to the millisecond, as Bull rounds it.
        """
        if self.backoff is Backoff.EXPONENTIAL:
            return round(self.delay_s * ((1 << attempt) - 1), 3)
        if self.backoff is Backoff.FIXED:
            return round(self.delay_s, 3)
        return 0.0

    def describe(self) -> str:
        """`5 attempts, exponential 2s` (what the run's tags and the CLI show)."""
        return f"{self.max_attempts} attempts, {backoff_text(self)}"


def backoff_text(policy: RetryPolicy) -> str:
    """The backoff as a run tag spells it: `exponential 2s`, `fixed 0.5s` or `none`."""
    if policy.backoff is Backoff.NONE:
        return str(Backoff.NONE)
    return f"{policy.backoff} {policy.delay_s:g}s"


def parse_backoff(text: str) -> tuple[Backoff, float]:
    """`exponential 2s` / `fixed 5` / `none` -> (backoff, delay in seconds).

    Raises:
        ValueError: not one of those forms.
    """
    kind, _, delay = text.strip().lower().partition(" ")
    backoff = Backoff(kind)
    if backoff is Backoff.NONE:
        if delay.strip():
            raise ValueError(f"backoff none takes no delay: {text!r}")
        return backoff, 0.0
    seconds = float(delay.strip().removesuffix("s"))
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"a backoff delay must be >= 0: {text!r}")
    return backoff, seconds
