"""What the ops and sensors share: each run's lane rule (retries, as the original queues
had them), bad input failing an op at once, a retry outcome turned into Dagster's
RetryRequested, the daemon's tick interval."""

# No "from __future__ import annotations": Dagster reads op and config annotations at runtime.

import functools
import inspect
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import dagster as dg

from gov_pipeline.domain.errors import PermanentError
from gov_pipeline.domain.lanes import DEFAULT_LANE, LaneRule, lane_of, lane_rule, rule_of_run
from gov_pipeline.domain.lanes import LANE_TAG as LANE_TAG  # the jobs' lane tags use it
from gov_pipeline.domain.retry import Backoff, RetryPolicy
from gov_pipeline.engine.execution import ExecutionReport
from gov_pipeline.orchestration.resources import DatabaseResource
from gov_pipeline.runners.batch import RetryLater
from gov_pipeline.services.run_fences import refuse_if_fenced

F = TypeVar("F", bound=Callable[..., Any])
_BACKOFFS = {Backoff.FIXED: None, Backoff.EXPONENTIAL: dg.Backoff.EXPONENTIAL}


def dagster_retry_policy(policy: RetryPolicy) -> dg.RetryPolicy:
    """`policy` as Dagster's op RetryPolicy: the same attempts and the same waits."""
    if policy.backoff is Backoff.NONE:
        return dg.RetryPolicy(max_retries=policy.max_retries)
    return dg.RetryPolicy(
        max_retries=policy.max_retries, delay=policy.delay_s, backoff=_BACKOFFS[policy.backoff]
    )


# The policy lane's rule fixed at definition time, for an op whose runs are always on the
# policy lane. `lane_retries` is better: it follows each run's lane and dagster.yaml.
POLICY_RETRY = dagster_retry_policy(lane_rule(DEFAULT_LANE).retry)
MAX_ATTEMPTS = POLICY_RETRY.max_retries + 1


def run_rule(context: dg.OpExecutionContext | dg.AssetExecutionContext) -> LaneRule:
    """The retries (and timeout) this run goes by: the rule tags the run coordinator gave it
    at submit (its lane's, from dagster.yaml), else its lane's rule in domain/lanes.py."""
    return rule_of_run(context.run.tags)


@contextmanager
def permanent_errors() -> Iterator[None]:
    """Bad input (unknown ids, illegal moves, invalid config) fails the op at once: a
    retry cannot fix it. Anything else propagates and the op's retry policy applies."""
    try:
        yield
    except PermanentError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from exc


def refuse_if_run_fenced(context: dg.OpExecutionContext, database: DatabaseResource) -> None:
    """A step of a run another worker ended (its worker lost the lease: cut off, or dead)
    fails at once, without a retry: the run's retry does its work. Chunks check it again
    before they commit (runners/batch.py), so a process back late commits nothing."""
    with permanent_errors(), database.sessions().begin() as session:
        refuse_if_fenced(session, context.run_id)


def lane_retries(fn: F) -> F:
    """Put under `@dg.op` (or `@dg.multi_asset`): an exception of the op is retried by its
    run's lane rule, a Dagster retry of the op with the rule's attempts and backoff (the
    lane of a processing run is only known per run, so no RetryPolicy fixed at definition
    time would do). Not retried: `dg.Failure(allow_retries=False)` (bad input), Dagster's
    own errors, and interrupts (a terminate), which are no `Exception`. The last attempt's
    exception fails the op as it is."""
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def generator(context: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                yield from fn(context, *args, **kwargs)
            except Exception as exc:
                retry = _retry_request(context, exc)
                if retry is None:
                    raise
                raise retry from exc

        return generator  # type: ignore[return-value]

    @functools.wraps(fn)
    def op(context: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(context, *args, **kwargs)
        except Exception as exc:
            retry = _retry_request(context, exc)
            if retry is None:
                raise
            raise retry from exc

    return op  # type: ignore[return-value]


def _retry_request(context: Any, exc: Exception) -> dg.RetryRequested | None:
    """The retry of the op after `exc`, by its run's rule; None when `exc` is not to be
    retried or the attempts are used up (it then fails the op as it is)."""
    if isinstance(exc, dg.RetryRequested | dg.DagsterError) or (
        isinstance(exc, dg.Failure) and not exc.allow_retries
    ):
        return None
    rule = run_rule(context).retry
    attempt = context.retry_number + 1  # this attempt: 1 is the first try
    if attempt >= rule.max_attempts:
        return None
    delay = rule.delay(attempt)
    context.log.warning(
        f"attempt {attempt} of {rule.max_attempts} failed ({type(exc).__name__}: {exc}); "
        f"retrying in {delay:g} s (the {lane_of(context.run.tags)} lane: {rule.describe()})"
    )
    return dg.RetryRequested(max_retries=rule.max_retries, seconds_to_wait=delay)


def retry_requested(context: dg.OpExecutionContext, retry: RetryLater) -> dg.RetryRequested:
    """The op's answer to a failed attempt that may be tried again: Dagster retries the op
    with its run's lane rule (the policy lane: (2^n - 1) x 2 s), and the retry starts after
    what is done."""
    rule = run_rule(context).retry
    attempt = context.retry_number + 1
    context.log.warning(f"change {retry.change_id}: {retry.error}; the op will be retried")
    return dg.RetryRequested(max_retries=rule.max_retries, seconds_to_wait=rule.delay(attempt))


def daemon_interval(seconds: int) -> int:
    """The `minimum_interval_seconds` that makes a sensor tick every `seconds`.

    The sensor daemon wakes every 5 s and skips a sensor whose last tick started less than
    its minimum interval ago; a loop that wakes a moment early skips it, so an interval of
    exactly 5 ticks every 10 s. One second less than wanted ticks on the intended wake-up.
    """
    return max(1, seconds - 1)


def log_executions(
    context: dg.OpExecutionContext, ran: Sequence[ExecutionReport], shown: int = 200
) -> None:
    """The executions an op ran, one line each, as one DEBUG event of the run (an event per
    execution cost the run a write to the event log each: most of a batch's time)."""
    if not ran:
        return
    lines = [
        f"execution {r.execution_id} ({r.workflow}) {r.status}: "
        f"{', '.join(r.actions) or 'nothing to do'}"
        for r in ran[:shown]
    ]
    if len(ran) > shown:
        lines.append(f"... and {len(ran) - shown} more")
    context.log.debug(f"{len(ran)} execution(s) run:\n" + "\n".join(lines))
