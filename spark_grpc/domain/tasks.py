"""Task states and the retry policy: the rules every process applies the same way."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any


class TaskState(StrEnum):
    """Where a task is in its life (stored as these strings)."""

    PENDING = "PENDING"  # stored; waiting to be queued (new, backoff, or Redis down)
    QUEUED = "QUEUED"  # a job for it is in Redis
    RUNNING = "RUNNING"  # a worker holds its lease and calls the source
    SUCCEEDED = "SUCCEEDED"  # the source answered
    FAILED = "FAILED"  # no attempt left, or a non-retryable error
    CANCELLED = "CANCELLED"  # CancelTask (or an overlap policy)
    TIMED_OUT = "TIMED_OUT"  # the last attempt ran past its timeout, or the deadline passed


TERMINAL = frozenset(
    {TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED, TaskState.TIMED_OUT}
)
RETRYABLE_FROM = frozenset({TaskState.FAILED, TaskState.TIMED_OUT, TaskState.CANCELLED})
CANCELLABLE = frozenset({TaskState.PENDING, TaskState.QUEUED, TaskState.RUNNING})

#: Error kinds recorded by the service itself (sources add theirs, e.g. SOURCE_TIMEOUT).
WORKER_LOST = "WORKER_LOST"
DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
CANCELLED = "CANCELLED"
SOURCE_DISABLED = "SOURCE_DISABLED"
SOURCE_TIMEOUT = "SOURCE_TIMEOUT"

DEFAULT_TIMEOUT_S = 600.0
MAX_TIMEOUT_S = 24 * 3600.0
MAX_ATTEMPTS_LIMIT = 100


@dataclass(frozen=True)
class RetryPolicy:
    """Temporal-style retry policy; a zero field means "the default"."""

    initial_interval_s: float = 1.0
    backoff_coefficient: float = 2.0
    maximum_interval_s: float = 0.0  # 0: 100 x initial_interval_s
    maximum_attempts: int = 3
    non_retryable_error_kinds: tuple[str, ...] = field(default_factory=tuple)

    def backoff(self, attempt: int) -> timedelta:
        """The wait after failed attempt number ``attempt`` (1-based)."""
        ceiling = self.maximum_interval_s or 100 * self.initial_interval_s
        delay = self.initial_interval_s * self.backoff_coefficient ** max(0, attempt - 1)
        return timedelta(seconds=min(delay, ceiling))

    def allows_retry(self, *, attempt: int, max_attempts: int, kind: str, retryable: bool) -> bool:
        """Whether a failure of ``attempt`` is followed by another attempt."""
        return retryable and attempt < max_attempts and kind not in self.non_retryable_error_kinds

    def merged(self, override: RetryPolicy | None) -> RetryPolicy:
        """This policy with the fields override sets (non-zero, non-empty) in place."""
        if override is None:
            return self
        values = asdict(self)
        for key, value in asdict(override).items():
            if value:
                values[key] = value
        values["non_retryable_error_kinds"] = tuple(values["non_retryable_error_kinds"])
        return RetryPolicy(**values)

    def to_json(self) -> dict[str, Any]:
        """The stored form."""
        data = asdict(self)
        data["non_retryable_error_kinds"] = list(self.non_retryable_error_kinds)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> RetryPolicy:
        """From the stored form; missing keys take the defaults."""
        data = dict(data or {})
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if "non_retryable_error_kinds" in known:
            known["non_retryable_error_kinds"] = tuple(known["non_retryable_error_kinds"])
        return cls(**known)


@dataclass(frozen=True)
class Failure:
    """How an attempt failed, as recorded on the task and its event."""

    kind: str
    message: str
    retryable: bool
    http_status: int = 0
    retry_after_s: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The stored form (TaskError)."""
        return {
            "kind": self.kind,
            "message": self.message,
            "retryable": self.retryable,
            "http_status": self.http_status,
        }


def next_state_after_failure(
    policy: RetryPolicy,
    failure: Failure,
    *,
    attempt: int,
    max_attempts: int,
    now: datetime,
    deadline: datetime | None,
) -> tuple[TaskState, datetime | None]:
    """Where a failed attempt leads: PENDING with its next attempt time, or terminal.

    A 429's Retry-After is honoured when longer than the backoff. A retry that would start
    after the overall deadline ends the task TIMED_OUT instead.
    """
    timed_out = failure.kind in (SOURCE_TIMEOUT, DEADLINE_EXCEEDED)
    terminal = TaskState.TIMED_OUT if timed_out else TaskState.FAILED
    if not policy.allows_retry(
        attempt=attempt, max_attempts=max_attempts, kind=failure.kind, retryable=failure.retryable
    ):
        return terminal, None
    delay = policy.backoff(attempt)
    if failure.retry_after_s is not None:
        delay = max(delay, timedelta(seconds=failure.retry_after_s))
    when = now + delay
    if deadline is not None and when >= deadline:
        return TaskState.TIMED_OUT, None
    return TaskState.PENDING, when
