"""The sweeper: one mechanism for every "should be in the queue but is not" case.

- RUNNING tasks whose lease expired belong to a dead worker: retried (PENDING after the
  backoff) or failed, per their retry policy.
- PENDING tasks whose next attempt time has come (the first enqueue failed, or a retry's
  backoff ended) are queued.
- QUEUED tasks whose job Redis no longer has (Redis restarted, or a worker died between
  taking the job and claiming the task) are queued again.

Rows are taken with ``FOR UPDATE SKIP LOCKED`` and changed by conditional transitions, so
any number of sweepers can run: a duplicate job is harmless, since only one claim wins.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import redis
from sqlalchemy import text

from spark_grpc import defaults
from spark_grpc.db.session import Database
from spark_grpc.domain.tasks import (
    WORKER_LOST,
    Failure,
    RetryPolicy,
    TaskState,
    next_state_after_failure,
)
from spark_grpc.errors import DatabaseUnavailableError
from spark_grpc.tasks import store
from spark_grpc.tasks.queue import TaskQueue

logger = logging.getLogger(__name__)

_BATCH = 500


@dataclass
class SweepReport:
    """What one sweep did."""

    leases_expired: int = 0
    pending_queued: int = 0
    lost_jobs_requeued: int = 0


async def sweep_once(db: Database, queue: TaskQueue, *, check_queued: bool = True) -> SweepReport:
    """One pass over the three cases."""
    report = SweepReport()
    report.leases_expired = await _expire_leases(db)
    report.pending_queued = await _queue_due_pending(db, queue)
    if check_queued:
        report.lost_jobs_requeued = await _requeue_lost_jobs(db, queue)
    return report


async def _expire_leases(db: Database) -> int:
    async with db.connection() as session:
        rows = (
            await session.execute(
                text(
                    "SELECT id, attempt, max_attempts, retry_policy, deadline_time, worker_name "
                    "FROM tasks WHERE state = 'RUNNING' AND lease_expire_time < clock_timestamp() "
                    "ORDER BY lease_expire_time LIMIT :n FOR UPDATE SKIP LOCKED"
                ),
                {"n": _BATCH},
            )
        ).all()
        for row in rows:
            failure = Failure(
                WORKER_LOST,
                f"worker {row.worker_name!r} stopped renewing the lease of attempt {row.attempt}",
                retryable=True,
            )
            state, when = next_state_after_failure(
                RetryPolicy.from_json(row.retry_policy),
                failure,
                attempt=row.attempt,
                max_attempts=row.max_attempts,
                now=datetime.now(UTC),
                deadline=row.deadline_time,
            )
            await store.transition(
                session,
                row.id,
                expected=[TaskState.RUNNING],
                to=state,
                attempt=row.attempt,
                error=failure,
                sets="next_attempt_time = :when",
                params={"when": when},
            )
            logger.warning("task %s: lease of attempt %d expired -> %s", row.id, row.attempt, state)
    return len(rows)


async def _queue_due_pending(db: Database, queue: TaskQueue) -> int:
    async with db.connection() as session:
        rows = (
            await session.execute(
                text(
                    "SELECT id, timeout_s FROM tasks WHERE state = 'PENDING' AND "
                    "next_attempt_time <= clock_timestamp() - make_interval(secs => :grace) "
                    "ORDER BY next_attempt_time LIMIT :n FOR UPDATE SKIP LOCKED"
                ),
                {"n": _BATCH, "grace": defaults.SWEEP_GRACE_S},
            )
        ).all()
        if not rows:
            return 0
        # Enqueue while holding the rows: if Redis is down this raises, the transaction
        # rolls back and the tasks stay PENDING for the next sweep.
        await queue.enqueue([(r.id, r.timeout_s) for r in rows])
        await store.transition_many(
            session, [r.id for r in rows], expected=[TaskState.PENDING], to=TaskState.QUEUED
        )
    return len(rows)


async def _requeue_lost_jobs(db: Database, queue: TaskQueue) -> int:
    async with db.connection() as session:
        rows = (
            await session.execute(
                text(
                    "SELECT id, timeout_s FROM tasks WHERE state = 'QUEUED' AND "
                    "update_time < clock_timestamp() - make_interval(secs => :after) "
                    "ORDER BY update_time LIMIT :n FOR UPDATE SKIP LOCKED"
                ),
                {"n": _BATCH, "after": defaults.QUEUED_CHECK_AFTER_S},
            )
        ).all()
        if not rows:
            return 0
        ids = [r.id for r in rows]
        waiting = await asyncio.to_thread(queue.jobs_waiting_sync, ids)
        lost = [r for r in rows if r.id not in waiting]
        if lost:
            await queue.enqueue([(r.id, r.timeout_s) for r in lost])
            logger.warning("re-queued %d QUEUED task(s) whose job Redis lost", len(lost))
        # Touch every checked row so it is looked at again only after the same delay.
        await session.execute(
            text(
                "UPDATE tasks SET update_time = clock_timestamp() "
                "WHERE id = ANY(:ids) AND state = 'QUEUED'"
            ),
            {"ids": ids},
        )
    return len(lost)


async def run_sweeper(
    db: Database,
    queue: TaskQueue,
    interval_s: float,
    stop: asyncio.Event,
    webhooks: Callable[[], Awaitable[int]] | None = None,
) -> None:
    """Sweeps (and delivers due webhooks) every interval until stop is set; outages are
    logged and retried."""
    rounds = 0
    while not stop.is_set():
        try:
            if webhooks is not None:
                await webhooks()
            report = await sweep_once(db, queue, check_queued=rounds % 5 == 0)
            if report.leases_expired or report.pending_queued or report.lost_jobs_requeued:
                logger.info("sweep: %s", report)
        except (DatabaseUnavailableError, redis.RedisError) as err:
            logger.warning("sweep skipped: %s", err)
        except Exception:
            logger.exception("sweep failed")
        rounds += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)


__all__ = ["SweepReport", "run_sweeper", "sweep_once", "uuid"]
