"""Retry policies: attempts and backoff (pure)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts include the first try; the wait doubles from `delay_s` (the policy queue's
    5 attempts with exponential 2 s backoff)."""

    max_attempts: int = 5
    delay_s: float = 2.0

    def delay(self, attempt: int) -> float:
        return float(self.delay_s * 2 ** (attempt - 1))
