"""Retry policy maths: backoff, attempts, non-retryable kinds, Retry-After, deadlines."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from spark_grpc.domain.tasks import Failure, RetryPolicy, TaskState, next_state_after_failure

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_backoff_grows_by_the_coefficient_up_to_the_maximum() -> None:
    policy = RetryPolicy(initial_interval_s=1, backoff_coefficient=2, maximum_interval_s=5)
    assert [policy.backoff(a).total_seconds() for a in range(1, 6)] == [1, 2, 4, 5, 5]


def test_default_maximum_interval_is_100_times_the_initial() -> None:
    assert RetryPolicy(initial_interval_s=2).backoff(50) == timedelta(seconds=200)


def test_retryable_failure_with_attempts_left_goes_back_to_pending() -> None:
    state, when = next_state_after_failure(
        RetryPolicy(),
        Failure("SOURCE_SERVER_ERROR", "500", True),
        attempt=1,
        max_attempts=3,
        now=NOW,
        deadline=None,
    )
    assert state == TaskState.PENDING and when == NOW + timedelta(seconds=1)


def test_last_attempt_fails_and_timeouts_end_timed_out() -> None:
    assert next_state_after_failure(
        RetryPolicy(),
        Failure("SOURCE_SERVER_ERROR", "500", True),
        attempt=3,
        max_attempts=3,
        now=NOW,
        deadline=None,
    ) == (TaskState.FAILED, None)
    assert next_state_after_failure(
        RetryPolicy(),
        Failure("SOURCE_TIMEOUT", "slow", True),
        attempt=3,
        max_attempts=3,
        now=NOW,
        deadline=None,
    ) == (TaskState.TIMED_OUT, None)


def test_non_retryable_errors_and_kinds_fail_at_once() -> None:
    assert next_state_after_failure(
        RetryPolicy(),
        Failure("SOURCE_UNAUTHENTICATED", "401", False),
        attempt=1,
        max_attempts=3,
        now=NOW,
        deadline=None,
    ) == (TaskState.FAILED, None)
    policy = RetryPolicy(non_retryable_error_kinds=("SOURCE_RATE_LIMITED",))
    assert next_state_after_failure(
        policy,
        Failure("SOURCE_RATE_LIMITED", "429", True),
        attempt=1,
        max_attempts=3,
        now=NOW,
        deadline=None,
    ) == (TaskState.FAILED, None)


def test_retry_after_is_honoured_when_longer_than_the_backoff() -> None:
    _, when = next_state_after_failure(
        RetryPolicy(),
        Failure("SOURCE_RATE_LIMITED", "429", True, retry_after_s=30),
        attempt=1,
        max_attempts=3,
        now=NOW,
        deadline=None,
    )
    assert when == NOW + timedelta(seconds=30)


def test_a_retry_past_the_deadline_ends_timed_out() -> None:
    state, _ = next_state_after_failure(
        RetryPolicy(initial_interval_s=10),
        Failure("SOURCE_SERVER_ERROR", "500", True),
        attempt=1,
        max_attempts=3,
        now=NOW,
        deadline=NOW + timedelta(seconds=5),
    )
    assert state == TaskState.TIMED_OUT


def test_run_overrides_replace_only_the_fields_they_set() -> None:
    workflow = RetryPolicy(initial_interval_s=5, maximum_attempts=7)
    merged = workflow.merged(
        RetryPolicy(initial_interval_s=0, backoff_coefficient=2.0, maximum_attempts=2)
    )
    assert (merged.initial_interval_s, merged.maximum_attempts) == (5, 2)
    assert RetryPolicy.from_json(merged.to_json()) == merged
