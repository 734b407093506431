"""The job queue (RQ on Redis). A job carries only a task id: Postgres holds the task.

RQ is synchronous (redis-py), so the asyncio side calls it through a worker thread;
``enqueue_many`` sends a whole batch in one pipeline. Job ids are derived from task ids,
so a re-enqueue by the sweeper replaces the job instead of piling up copies, and a cancel
can find the job to take it off the queue.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from typing import Any

import redis
from rq import Queue
from rq.job import Job
from sqlalchemy import Row

from spark_grpc.db.session import Database
from spark_grpc.domain.tasks import TaskState
from spark_grpc.tasks import store

logger = logging.getLogger(__name__)

QUEUE_NAME = "spark-tasks"
JOB_FUNCTION = "spark_grpc.worker.jobs.run_task"
#: RQ's own timeout is only a safety net behind the task's timeout, which the worker
#: enforces on the source call; RQ must never mark a live job abandoned.
JOB_TIMEOUT_MARGIN_S = 120


def job_id_for(task_id: uuid.UUID | str) -> str:
    """The RQ job id of a task."""
    return f"spark-task-{task_id}"


def redis_connection(url: str) -> redis.Redis:
    """A redis-py client with bounded connect and read times, so an outage is an error
    within seconds, never a hang."""
    return redis.Redis.from_url(
        url, socket_connect_timeout=2, socket_timeout=5, health_check_interval=10
    )


class TaskQueue:
    """Puts tasks' jobs on the queue and takes them off."""

    def __init__(self, redis_url: str) -> None:
        self.connection = redis_connection(redis_url)
        self.queue = Queue(QUEUE_NAME, connection=self.connection)

    def enqueue_sync(self, tasks: Sequence[tuple[uuid.UUID, float]]) -> None:
        """Enqueues (task id, timeout seconds) pairs in one pipeline. Blocking."""
        datas = [
            Queue.prepare_data(
                JOB_FUNCTION,
                args=(str(task_id),),
                job_id=job_id_for(task_id),
                timeout=int(timeout_s) + JOB_TIMEOUT_MARGIN_S,
                result_ttl=0,
                failure_ttl=3600,
            )
            for task_id, timeout_s in tasks
        ]
        with self.connection.pipeline() as pipe:
            self.queue.enqueue_many(datas, pipeline=pipe)
            pipe.execute()

    async def enqueue(self, tasks: Sequence[tuple[uuid.UUID, float]]) -> None:
        """Enqueues from asyncio without blocking the loop."""
        await asyncio.to_thread(self.enqueue_sync, tasks)

    def remove_sync(self, task_id: uuid.UUID) -> None:
        """Takes a task's job off the queue, if it is there. Blocking."""
        self.queue.remove(job_id_for(task_id))

    async def remove(self, task_id: uuid.UUID) -> None:
        """Takes a task's job off the queue from asyncio; a failure is only logged (the
        worker's claim refuses a cancelled task anyway)."""
        try:
            await asyncio.to_thread(self.remove_sync, task_id)
        except redis.RedisError as err:
            logger.warning("could not remove the job of task %s: %s", task_id, err)

    def jobs_waiting_sync(self, task_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        """The tasks whose job is still waiting in Redis (queued). Blocking."""
        waiting: set[uuid.UUID] = set()
        jobs = Job.fetch_many([job_id_for(t) for t in task_ids], connection=self.connection)
        for task_id, job in zip(task_ids, jobs, strict=True):
            if job is not None and job.get_status(refresh=False) in (
                "queued",
                "scheduled",
                "deferred",
            ):
                waiting.add(task_id)
        return waiting

    def close(self) -> None:
        """Closes the Redis connections."""
        self.connection.close()


async def enqueue_after_commit(
    db: Database, queue: TaskQueue, tasks: Sequence[tuple[uuid.UUID, float]]
) -> dict[uuid.UUID, Row[Any]]:
    """Queues tasks whose rows a committed transaction wrote, then marks them QUEUED.

    If Redis is down the tasks simply stay PENDING, already due, and the sweeper queues
    them once Redis is back: the caller's request still succeeds. Returns the ids that
    this call moved to QUEUED, with their rows (a worker may have claimed some first).
    """
    if not tasks:
        return {}
    try:
        await queue.enqueue(tasks)
    except redis.RedisError as err:
        logger.warning(
            "Redis unavailable (%s): %d task(s) wait PENDING for the sweeper", err, len(tasks)
        )
        return {}
    async with db.connection() as session:
        rows = await store.transition_many(
            session,
            [t for t, _ in tasks],
            expected=[TaskState.PENDING],
            to=TaskState.QUEUED,
            sets="next_attempt_time = NULL",
        )
    return {row.id: row for row in rows}
