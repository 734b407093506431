"""Running one attempt of a task: claim, call the source under a lease, record the outcome.

    claim (QUEUED, or PENDING and due -> RUNNING, attempt + 1, lease)
      -> call the source with a timeout, renewing the lease by heartbeat and writing its
         streamed events as they come
      -> SUCCEEDED with the answer | PENDING for a retry | FAILED | TIMED_OUT

Every write after the claim names the attempt, so a worker that lost its lease (it was
presumed dead, the sweeper moved the task on) can no longer change the task.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text

from spark_grpc import defaults
from spark_grpc.domain.tasks import (
    DEADLINE_EXCEEDED,
    SOURCE_DISABLED,
    Failure,
    RetryPolicy,
    TaskState,
    next_state_after_failure,
)
from spark_grpc.errors import SourceError
from spark_grpc.sources import base as sources
from spark_grpc.sources.registry import adapter_for
from spark_grpc.tasks import store
from spark_grpc.tracing import span_from_carrier
from spark_grpc.worker.runtime import WorkerRuntime

logger = logging.getLogger(__name__)

_CLAIM_SETS = (
    "attempt = tasks.attempt + 1, worker_name = :worker, start_time = clock_timestamp(), "
    "lease_expire_time = clock_timestamp() + make_interval(secs => :lease), "
    "next_attempt_time = NULL, error = NULL"
)
_CLAIMABLE = "t.state = 'QUEUED' OR t.next_attempt_time <= clock_timestamp()"


class _LostLease(Exception):
    """The attempt no longer owns the task (cancelled, or presumed dead and moved on)."""


async def execute_task(rt: WorkerRuntime, task_id: uuid.UUID) -> None:
    """Claims a task and runs its attempt to the end (a forked job horse does this)."""
    claimed = await claim_task(rt, task_id)
    if claimed is not None:
        await run_claimed(rt, *claimed)


async def start_task(rt: WorkerRuntime, task_id: uuid.UUID) -> bool:
    """Claims a task and leaves its attempt running in the background, in the slot the
    job took. False when there was nothing to claim (the caller gives the slot back)."""
    claimed = await claim_task(rt, task_id)
    if claimed is None:
        return False
    rt.spawn(run_claimed(rt, *claimed))
    return True


async def claim_task(rt: WorkerRuntime, task_id: uuid.UUID) -> tuple[Any, Any] | None:
    """The next attempt of a task, if it is still there to be claimed, with its source."""
    async with rt.db.connection() as session:
        task = await store.transition(
            session,
            task_id,
            expected=[TaskState.QUEUED, TaskState.PENDING],
            to=TaskState.RUNNING,
            sets=_CLAIM_SETS,
            params={"worker": rt.name, "lease": rt.settings.lease_s},
            extra_where=_CLAIMABLE,
        )
        # The source it runs on, in the same transaction: one round of BEGIN/COMMIT less.
        source = await _source_of(session, task.workflow_id) if task is not None else None
    if task is None or source is None:
        logger.info("task %s is not claimable (running elsewhere, finished or cancelled)", task_id)
        return None
    return task, source


async def run_claimed(rt: WorkerRuntime, task: Any, source: Any) -> None:
    """Runs a claimed attempt under its trace."""
    with span_from_carrier(
        "spark.run_task",
        (task.context or {}).get("trace"),
        task_id=str(task.id),
        attempt=task.attempt,
        worker=rt.name,
    ):
        await _run_attempt(rt, task, source)


async def _run_attempt(rt: WorkerRuntime, task: Any, source: Any) -> None:
    """The claimed attempt: call the source under a lease, record the outcome."""
    task_id = task.id
    attempt = task.attempt
    logger.info("task %s attempt %d started on %s", task_id, attempt, rt.name)
    if task.deadline_time is not None and task.deadline_time <= datetime.now(UTC):
        failure = Failure(DEADLINE_EXCEEDED, "the task's deadline passed before the attempt", False)
        await _record_failure(rt, task, failure)
        return
    if not source.enabled:
        message = f"source {source.display_name!r} is disabled; enable it and retry the task"
        await _record_failure(rt, task, Failure(SOURCE_DISABLED, message, False))
        return
    api_key = rt.box.decrypt(source.api_key_ciphertext) if source.api_key_ciphertext else None
    connection = sources.SourceConnection(
        type=sources.SourceType(source.type), url=source.url, api_key=api_key
    )
    adapter, flow_id = adapter_for(connection, rt.http), source.remote_flow_id
    events = _EventWriter(rt, task_id, attempt)
    timeout = task.timeout_s
    if task.deadline_time is not None:
        # The overall deadline bounds every attempt, not only when attempts start.
        timeout = min(timeout, (task.deadline_time - datetime.now(UTC)).total_seconds())
    call = asyncio.ensure_future(
        adapter.run(
            flow_id,
            input_value=task.input_value,
            tweaks=task.tweaks or {},
            timeout=timeout,
            stream=True,
            on_event=events.add,
        )
    )
    rt.running[task_id] = call
    heartbeat = asyncio.ensure_future(_heartbeat(rt, task_id, attempt, call))
    try:
        result = await call
    except asyncio.CancelledError:
        if not call.cancelled():
            raise  # this coroutine itself is being cancelled (shutdown, RQ timeout)
        logger.info("task %s attempt %d stopped: cancelled or lease lost", task_id, attempt)
        await events.close()
        return
    except SourceError as err:
        await _record_failure(rt, task, _failure_from(err), await events.close())
        return
    finally:
        rt.running.pop(task_id, None)
        heartbeat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await heartbeat
        events.stop()  # whatever raised above: the writer does not outlive the attempt
    # The events still waiting go in the same transaction as the outcome, before it.
    await _record_success(rt, task, result, await events.close())


async def _source_of(conn: Any, workflow_id: uuid.UUID) -> Any:
    """The workflow's remote flow id and its source's connection details."""
    return (
        await conn.execute(
            text(
                "SELECT w.remote_flow_id, s.type, s.url, s.api_key_ciphertext, s.enabled, "
                "s.display_name FROM workflows w JOIN sources s ON s.id = w.source_id "
                "WHERE w.id = :id"
            ),
            {"id": workflow_id},
        )
    ).one_or_none()


async def _heartbeat(
    rt: WorkerRuntime, task_id: uuid.UUID, attempt: int, call: asyncio.Future[Any]
) -> None:
    """Renews the lease while the source call runs; stops the call if the lease is lost."""
    interval = rt.settings.lease_s / 3
    while True:
        await asyncio.sleep(interval)
        try:
            async with rt.db.connection() as session:
                owned = (
                    await session.execute(
                        text(
                            "UPDATE tasks SET lease_expire_time = clock_timestamp() + "
                            "make_interval(secs => :lease) WHERE id = :id AND state = 'RUNNING' "
                            "AND attempt = :attempt RETURNING 1"
                        ),
                        {"id": task_id, "attempt": attempt, "lease": rt.settings.lease_s},
                    )
                ).scalar_one_or_none()
        except Exception as err:  # Postgres down: keep calling; the lease decides
            logger.warning("heartbeat of task %s failed: %s", task_id, type(err).__name__)
            continue
        if owned is None:
            logger.info("task %s attempt %d no longer owned; stopping its call", task_id, attempt)
            call.cancel()
            return


class _EventWriter:
    """Writes a run's streamed events in small batches: each batch one transaction, each
    event its own sequence. Tokens that arrive while a batch is written join the next;
    the ones left when the call ends are handed to the outcome's transaction."""

    def __init__(self, rt: WorkerRuntime, task_id: uuid.UUID, attempt: int) -> None:
        self._rt = rt
        self._task_id = task_id
        self._attempt = attempt
        self._pending: list[tuple[str, dict[str, Any]]] = []
        self._wake = asyncio.Event()
        self._closed = False
        self._writer = asyncio.ensure_future(self._run())

    async def add(self, event: sources.RunEvent) -> None:
        """The adapter's on_event callback."""
        # A large streamed message is cut into chunks: every event, hence every stream
        # message and every ListTaskEvents page, stays far below the message limits.
        step = defaults.OUTPUT_CHUNK_BYTES
        pieces = [event.text[i : i + step] for i in range(0, len(event.text), step)] or [""]
        for piece in pieces:
            if event.kind in ("token", "message"):
                self._pending.append(
                    (
                        "output_chunk",
                        {"attempt": self._attempt, "text": piece, "source_event": event.kind},
                    )
                )
            elif event.kind == "progress":
                self._pending.append(("progress", {"fraction": -1.0, "message": piece}))
            else:
                self._pending.append(("log", {"level": "LOG_LEVEL_INFO", "message": piece}))
        self._wake.set()

    async def close(self) -> list[tuple[str, dict[str, Any]]]:
        """Waits for the batch being written and returns the events not yet written."""
        self._closed = True
        self._wake.set()
        with contextlib.suppress(asyncio.CancelledError):
            await self._writer
        left, self._pending = self._pending, []
        return left

    def stop(self) -> None:
        """Stops the writer if close() was never reached."""
        if not self._writer.done():
            self._closed = True
            self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._closed:
                return  # the rest goes with the outcome
            batch, self._pending = self._pending, []
            if batch:
                try:
                    async with self._rt.db.connection() as session:
                        await store.append_events(session, self._task_id, self._attempt, batch)
                except Exception:
                    logger.warning(
                        "could not record %d event(s) of task %s",
                        len(batch),
                        self._task_id,
                        exc_info=True,
                    )


def _failure_from(err: SourceError) -> Failure:
    return Failure(
        kind=err.reason,
        message=err.message,
        retryable=err.retryable,
        http_status=err.http_status or 0,
        retry_after_s=err.retry_after_s,
    )


async def _record_failure(
    rt: WorkerRuntime,
    task: Any,
    failure: Failure,
    events: list[tuple[str, dict[str, Any]]] | None = None,
) -> None:
    policy = RetryPolicy.from_json(task.retry_policy)
    state, when = next_state_after_failure(
        policy,
        failure,
        attempt=task.attempt,
        max_attempts=task.max_attempts,
        now=datetime.now(UTC),
        deadline=task.deadline_time,
    )
    async with rt.db.connection() as session:
        if events:
            await store.append_events(session, task.id, task.attempt, events)
        row = await store.transition(
            session,
            task.id,
            expected=[TaskState.RUNNING],
            to=state,
            attempt=task.attempt,
            error=failure,
            sets="next_attempt_time = :when",
            params={"when": when},
        )
    rt.failed += 1
    if row is None:
        logger.info("task %s attempt %d outcome dropped: no longer owned", task.id, task.attempt)
    else:
        logger.info(
            "task %s attempt %d failed (%s) -> %s", task.id, task.attempt, failure.kind, state
        )


async def _record_success(
    rt: WorkerRuntime,
    task: Any,
    result: sources.RunResult,
    events: list[tuple[str, dict[str, Any]]],
) -> None:
    encoded = json.dumps(result.output, separators=(",", ":"))
    size = len(encoded.encode())
    limit = rt.settings.inline_output_bytes
    truncated = size > limit
    async with rt.db.connection() as session:
        if events:
            await store.append_events(session, task.id, task.attempt, events)
        if truncated:
            # Too big for a response: the whole answer goes into the event log in chunks.
            step = defaults.OUTPUT_CHUNK_BYTES
            chunks = [encoded[i : i + step] for i in range(0, len(encoded), step)]
            await store.append_events(
                session,
                task.id,
                task.attempt,
                [
                    (
                        "output_chunk",
                        {
                            "attempt": task.attempt,
                            "text": chunk,
                            "source_event": "output",
                            "last": i == len(chunks) - 1,
                        },
                    )
                    for i, chunk in enumerate(chunks)
                ],
            )
        row = await store.transition(
            session,
            task.id,
            expected=[TaskState.RUNNING],
            to=TaskState.SUCCEEDED,
            attempt=task.attempt,
            sets=(
                "output = CAST(:output AS jsonb), output_text = :text, "
                "output_size_bytes = :size, output_truncated = :truncated"
            ),
            params={
                "output": None if truncated else encoded,
                "text": result.text[: limit // 4] if truncated else result.text,
                "size": size,
                "truncated": truncated,
            },
        )
    if row is None:
        logger.info("task %s attempt %d answer dropped: no longer owned", task.id, task.attempt)
    else:
        rt.succeeded += 1
        logger.info("task %s attempt %d succeeded (%d bytes)", task.id, task.attempt, size)
