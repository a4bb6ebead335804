"""What the ops and sensors share: the policy queue's retries, bad input failing an op at
once, a retry outcome turned into Dagster's RetryRequested, the daemon's tick interval."""

# No "from __future__ import annotations": Dagster reads op and config annotations at runtime.

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

from gov_pipeline.domain.errors import PermanentError
from gov_pipeline.runners.batch import RetryLater

# The policy queue of the original: 5 attempts, exponential backoff from 2 s.
POLICY_RETRY = dg.RetryPolicy(max_retries=4, delay=2, backoff=dg.Backoff.EXPONENTIAL)
MAX_ATTEMPTS = POLICY_RETRY.max_retries + 1
LANE_TAG = "gov/queue"


@contextmanager
def permanent_errors() -> Iterator[None]:
    """Bad input (unknown ids, illegal moves, invalid config) fails the op at once: a
    retry cannot fix it. Anything else propagates and the op's retry policy applies."""
    try:
        yield
    except PermanentError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from exc


def retry_requested(context: dg.OpExecutionContext, retry: RetryLater) -> dg.RetryRequested:
    """The op's answer to a failed attempt that may be tried again: Dagster retries the op
    with the policy's exponential backoff ((2^n - 1) x 2 s), and the retry starts after
    what is done."""
    context.log.warning(f"change {retry.change_id}: {retry.error}; the op will be retried")
    attempt = context.retry_number + 1
    delay = float(POLICY_RETRY.delay or 0) * (2**attempt - 1)
    return dg.RetryRequested(max_retries=POLICY_RETRY.max_retries, seconds_to_wait=delay)


def daemon_interval(seconds: int) -> int:
    """The `minimum_interval_seconds` that makes a sensor tick every `seconds`.

    The sensor daemon wakes every 5 s and skips a sensor whose last tick started less than
    its minimum interval ago; a loop that wakes a moment early skips it, so an interval of
    exactly 5 ticks every 10 s. One second less than wanted ticks on the intended wake-up.
    """
    return max(1, seconds - 1)
