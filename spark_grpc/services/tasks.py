"""TaskService: follow, cancel, retry and delete tasks; read their event log."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf import json_format
from sqlalchemy import text

from spark_grpc._gen.spark.v1 import task_pb2, task_service_pb2, task_service_pb2_grpc
from spark_grpc.db.keyset import keyset_position
from spark_grpc.domain.tasks import (
    CANCELLABLE,
    CANCELLED,
    RETRYABLE_FROM,
    TERMINAL,
    Failure,
    RetryPolicy,
    TaskState,
)
from spark_grpc.errors import (
    FailedPreconditionError,
    FieldViolation,
    InvalidArgumentError,
    NotFoundError,
)
from spark_grpc.events.hub import EventHub
from spark_grpc.services.convert import struct, timestamp
from spark_grpc.services.deps import ServiceDeps
from spark_grpc.tasks import store
from spark_grpc.tasks.queue import enqueue_after_commit
from spark_grpc.validation import Validator

logger = logging.getLogger(__name__)

#: The most event bytes one ListTaskEvents page carries (events are at most 256 KiB each).
_EVENT_PAGE_BUDGET_BYTES = 2 * 1024 * 1024

STATE_NUMBERS: dict[TaskState, Any] = {
    s: task_pb2.TaskState.Value(f"TASK_STATE_{s.value}") for s in TaskState
}
STATES_BY_NUMBER = {v: k for k, v in STATE_NUMBERS.items()}


def policy_to_proto(policy: RetryPolicy) -> task_pb2.RetryPolicy:
    """The retry policy in force, every default spelled out."""
    message = task_pb2.RetryPolicy(
        backoff_coefficient=policy.backoff_coefficient,
        maximum_attempts=policy.maximum_attempts,
        non_retryable_error_kinds=policy.non_retryable_error_kinds,
    )
    message.initial_interval.FromMilliseconds(int(policy.initial_interval_s * 1000))
    message.maximum_interval.FromMilliseconds(
        int((policy.maximum_interval_s or 100 * policy.initial_interval_s) * 1000)
    )
    return message


def policy_from_proto(message: task_pb2.RetryPolicy, v: Validator, field: str) -> RetryPolicy:
    """A policy from a request; unset fields stay zero (= "inherit")."""
    initial = message.initial_interval.ToTimedelta().total_seconds()
    maximum = message.maximum_interval.ToTimedelta().total_seconds()
    if initial < 0 or initial > 86400:
        v.add(f"{field}.initial_interval", "must be between 0 and 24 h")
    if maximum < 0 or maximum > 7 * 86400:
        v.add(f"{field}.maximum_interval", "must be between 0 and 7 days")
    if message.backoff_coefficient and not 1 <= message.backoff_coefficient <= 100:
        v.add(f"{field}.backoff_coefficient", "must be between 1 and 100")
    if not 0 <= message.maximum_attempts <= 100:
        v.add(f"{field}.maximum_attempts", "must be between 1 and 100 (0 inherits)")
    for i, kind in enumerate(message.non_retryable_error_kinds):
        v.text(f"{field}.non_retryable_error_kinds[{i}]", kind, max_length=64, required=True)
    return RetryPolicy(
        initial_interval_s=initial,
        backoff_coefficient=message.backoff_coefficient,
        maximum_interval_s=maximum,
        maximum_attempts=message.maximum_attempts,
        non_retryable_error_kinds=tuple(message.non_retryable_error_kinds),
    )


def _error(data: dict[str, Any] | None) -> task_pb2.TaskError | None:
    if not data:
        return None
    return task_pb2.TaskError(
        kind=data.get("kind", ""),
        message=data.get("message", ""),
        retryable=bool(data.get("retryable")),
        http_status=int(data.get("http_status") or 0),
    )


def task_to_proto(row: Any) -> task_pb2.Task:
    """A task row as a client sees it; never larger than the inline output limit."""
    message = task_pb2.Task(
        id=str(row.id),
        workflow_id=str(row.workflow_id),
        schedule_id=str(row.schedule_id) if row.schedule_id else "",
        state=STATE_NUMBERS[TaskState(row.state)],
        input_value=row.input_value,
        tweaks=struct(row.tweaks or {}),
        output_text=row.output_text,
        output_truncated=row.output_truncated,
        output_size_bytes=row.output_size_bytes,
        error=_error(row.error),
        attempt=row.attempt,
        max_attempts=row.max_attempts,
        next_attempt_time=timestamp(row.next_attempt_time),
        worker_name=row.worker_name,
        retry_policy=policy_to_proto(RetryPolicy.from_json(row.retry_policy)),
        deadline_time=timestamp(row.deadline_time),
        create_time=timestamp(row.create_time),
        start_time=timestamp(row.start_time),
        finish_time=timestamp(row.finish_time),
        update_time=timestamp(row.update_time),
        last_event_sequence=row.last_sequence,
        webhook_url=row.webhook_url,
    )
    message.timeout.FromMilliseconds(int(row.timeout_s * 1000))
    if row.output is not None:
        json_format.ParseDict(row.output, message.output)
    return message


def event_to_proto(task_id: uuid.UUID, row: Any) -> task_pb2.TaskEvent:
    """A stored event as a client sees it."""
    event = task_pb2.TaskEvent(
        task_id=str(task_id), sequence=row.sequence, event_time=timestamp(row.event_time)
    )
    data = row.data
    if row.kind == "state_change":
        event.state_change.CopyFrom(
            task_pb2.TaskStateChange(
                from_state=STATE_NUMBERS[TaskState(data["from"])] if data.get("from") else None,
                to_state=STATE_NUMBERS[TaskState(data["to"])],
                attempt=data.get("attempt", 0),
                error=_error(data.get("error")),
            )
        )
    elif row.kind == "progress":
        event.progress.CopyFrom(
            task_pb2.TaskProgress(
                fraction=data.get("fraction", -1.0), message=data.get("message", "")
            )
        )
    elif row.kind == "log":
        event.log.CopyFrom(
            task_pb2.TaskLogLine(
                level=data.get("level", "LOG_LEVEL_INFO"), message=data.get("message", "")
            )
        )
    else:
        event.output_chunk.CopyFrom(
            task_pb2.TaskOutputChunk(
                attempt=data.get("attempt", 0),
                text=data.get("text", ""),
                last=bool(data.get("last")),
                source_event=data.get("source_event", ""),
            )
        )
    return event


async def get_task_row(session: Any, task_id: uuid.UUID) -> Any:
    """The task, or NotFoundError."""
    row = (
        await session.execute(
            text(f"SELECT {store.TASK_COLUMNS} FROM tasks WHERE id = :id"), {"id": task_id}
        )
    ).one_or_none()
    if row is None:
        raise NotFoundError(
            f"no task has id {task_id}", reason="TASK_NOT_FOUND", metadata={"task_id": str(task_id)}
        )
    return row


def _state_error(
    task_id: uuid.UUID, state: str, action: str, allowed: frozenset[TaskState], reason: str
) -> FailedPreconditionError:
    return FailedPreconditionError(
        f"task {task_id} is {state}; only a task that is "
        f"{' or '.join(sorted(s.value for s in allowed))} can be {action}",
        reason=reason,
        metadata={"task_id": str(task_id), "state": state},
    )


class TaskServicer(task_service_pb2_grpc.TaskServiceServicer):
    """Implements spark.v1.TaskService."""

    def __init__(self, deps: ServiceDeps, hub: EventHub) -> None:
        self._deps = deps
        from spark_grpc.services.streams import TaskStreams

        self._streams = TaskStreams(deps, hub)

    async def WatchTask(
        self, request: task_service_pb2.WatchTaskRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[task_service_pb2.WatchTaskResponse]:
        async for response in self._streams.watch_task(request, context):
            yield response

    async def WatchTasks(
        self, request: task_service_pb2.WatchTasksRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[task_service_pb2.WatchTasksResponse]:
        async for response in self._streams.watch_tasks(request, context):
            yield response

    async def ListWebhookDeliveries(
        self,
        request: task_service_pb2.ListWebhookDeliveriesRequest,
        context: grpc.aio.ServicerContext,
    ) -> task_service_pb2.ListWebhookDeliveriesResponse:
        task_id = self._task_id(request.task_id, "task_id")
        async with self._deps.db.connection() as conn:
            await get_task_row(conn, task_id)
            rows = (
                await conn.execute(
                    text(
                        "SELECT id, url, state, payload, attempts, next_attempt_time, create_time "
                        "FROM webhook_deliveries WHERE task_id = :id ORDER BY create_time"
                    ),
                    {"id": task_id},
                )
            ).all()
        response = task_service_pb2.ListWebhookDeliveriesResponse()
        for row in rows:
            delivery = response.deliveries.add(
                id=str(row.id),
                url=row.url,
                state=task_service_pb2.WebhookDeliveryState.Value(
                    f"WEBHOOK_DELIVERY_STATE_{row.state}"
                ),
                payload=struct(row.payload),
                next_attempt_time=timestamp(row.next_attempt_time),
                create_time=timestamp(row.create_time),
            )
            for attempt in row.attempts:
                a = delivery.attempts.add(
                    http_status=int(attempt.get("http_status", 0)), error=attempt.get("error", "")
                )
                a.attempt_time.FromDatetime(datetime.fromisoformat(attempt["time"]))
                a.duration.FromMilliseconds(int(attempt.get("duration_ms", 0)))
        return response

    def _task_id(self, value: str, field: str = "id") -> uuid.UUID:
        v = Validator()
        task_id = v.uuid(field, value)
        v.raise_if_invalid()
        assert task_id is not None
        return task_id

    async def GetTask(
        self, request: task_service_pb2.GetTaskRequest, context: grpc.aio.ServicerContext
    ) -> task_service_pb2.GetTaskResponse:
        task_id = self._task_id(request.id)
        async with self._deps.db.read() as conn:
            row = await get_task_row(conn, task_id)
        return task_service_pb2.GetTaskResponse(task=task_to_proto(row))

    async def ListTasks(
        self, request: task_service_pb2.ListTasksRequest, context: grpc.aio.ServicerContext
    ) -> task_service_pb2.ListTasksResponse:
        v = Validator()
        size = v.page_size("page_size", request.page_size)
        workflow_id = v.uuid("workflow_id", request.workflow_id, required=False)
        schedule_id = v.uuid("schedule_id", request.schedule_id, required=False)
        for i, state in enumerate(request.states):
            v.enum(f"states[{i}]", state, STATES_BY_NUMBER, required=True)
        v.raise_if_invalid()
        filters = {
            "workflow_id": request.workflow_id,
            "schedule_id": request.schedule_id,
            "states": sorted(set(request.states)),
            "after": request.create_time_after.ToJsonString()
            if request.HasField("create_time_after")
            else "",
            "before": request.create_time_before.ToJsonString()
            if request.HasField("create_time_before")
            else "",
        }
        position = self._deps.tokens.decode("tasks", filters, request.page_token)
        where = ["TRUE"]
        params: dict[str, Any] = {"limit": size + 1}
        if workflow_id is not None:
            where.append("workflow_id = :workflow_id")
            params["workflow_id"] = workflow_id
        if schedule_id is not None:
            where.append("schedule_id = :schedule_id")
            params["schedule_id"] = schedule_id
        if request.states:
            where.append("state = ANY(:states)")
            params["states"] = [STATES_BY_NUMBER[s].value for s in request.states]
        if request.HasField("create_time_after"):
            where.append("create_time >= :after")
            params["after"] = request.create_time_after.ToDatetime(tzinfo=UTC)
        if request.HasField("create_time_before"):
            where.append("create_time < :before")
            params["before"] = request.create_time_before.ToDatetime(tzinfo=UTC)
        if position is not None:
            try:
                params["pos_time"] = datetime.fromisoformat(position[0])
                params["pos_id"] = uuid.UUID(position[1])
            except (TypeError, ValueError, IndexError):
                raise InvalidArgumentError(
                    "invalid page_token", violations=[FieldViolation("page_token", "malformed")]
                ) from None
            where.append("(create_time, id) < (:pos_time, :pos_id)")
        query = text(
            f"SELECT {store.TASK_COLUMNS} FROM tasks WHERE {' AND '.join(where)} "
            "ORDER BY create_time DESC, id DESC LIMIT :limit"
        )
        async with self._deps.db.read() as conn:
            rows = (await conn.execute(query, params)).all()
        response = task_service_pb2.ListTasksResponse(tasks=[task_to_proto(r) for r in rows[:size]])
        if len(rows) > size:
            response.next_page_token = self._deps.tokens.encode(
                "tasks", filters, keyset_position(rows[size - 1])
            )
        return response

    async def CancelTask(
        self, request: task_service_pb2.CancelTaskRequest, context: grpc.aio.ServicerContext
    ) -> task_service_pb2.CancelTaskResponse:
        v = Validator()
        task_id = v.uuid("id", request.id)
        v.text("reason", request.reason, max_length=500)
        v.raise_if_invalid()
        assert task_id is not None
        reason = request.reason or "cancelled by CancelTask"
        async with self._deps.db.connection() as session:
            row = await store.transition(
                session,
                task_id,
                expected=CANCELLABLE,
                to=TaskState.CANCELLED,
                error=Failure(CANCELLED, reason, retryable=False),
                sets="next_attempt_time = NULL",
            )
            if row is None:
                current = await get_task_row(session, task_id)
                raise _state_error(
                    task_id, current.state, "cancelled", CANCELLABLE, "TASK_NOT_CANCELLABLE"
                )
        # After the commit: take the job off the queue and tell a running worker to stop.
        if row.from_state in (TaskState.QUEUED, TaskState.PENDING):
            await self._deps.queue.remove(task_id)
        elif row.from_state == TaskState.RUNNING:
            await self._deps.announce_cancel(task_id)
        return task_service_pb2.CancelTaskResponse(task=task_to_proto(row))

    async def RetryTask(
        self, request: task_service_pb2.RetryTaskRequest, context: grpc.aio.ServicerContext
    ) -> task_service_pb2.RetryTaskResponse:
        task_id = self._task_id(request.id)
        async with self._deps.db.connection() as session:
            row = await store.transition(
                session,
                task_id,
                expected=RETRYABLE_FROM,
                to=TaskState.PENDING,
                sets=(
                    "next_attempt_time = clock_timestamp(), finish_time = NULL, "
                    "max_attempts = tasks.attempt + "
                    "GREATEST(1, (tasks.retry_policy->>'maximum_attempts')::int), "
                    "output = NULL, output_text = '', output_size_bytes = 0, "
                    "output_truncated = false"
                ),
            )
            if row is None:
                current = await get_task_row(session, task_id)
                raise _state_error(
                    task_id, current.state, "retried", RETRYABLE_FROM, "TASK_NOT_RETRYABLE"
                )
        queued = await enqueue_after_commit(
            self._deps.db, self._deps.queue, [(task_id, row.timeout_s)]
        )
        if queued:
            async with self._deps.db.connection() as session:
                row = await get_task_row(session, task_id)
        return task_service_pb2.RetryTaskResponse(task=task_to_proto(row))

    async def DeleteTask(
        self, request: task_service_pb2.DeleteTaskRequest, context: grpc.aio.ServicerContext
    ) -> task_service_pb2.DeleteTaskResponse:
        task_id = self._task_id(request.id)
        async with self._deps.db.connection() as session:
            deleted = (
                await session.execute(
                    text(
                        "DELETE FROM tasks WHERE id = :id AND state = ANY(:terminal) RETURNING id"
                    ),
                    {"id": task_id, "terminal": [s.value for s in TERMINAL]},
                )
            ).one_or_none()
            if deleted is None:
                current = await get_task_row(session, task_id)
                raise FailedPreconditionError(
                    f"task {task_id} is {current.state}; cancel it before deleting it",
                    reason="TASK_NOT_TERMINAL",
                    metadata={"task_id": str(task_id), "state": current.state},
                )
        return task_service_pb2.DeleteTaskResponse()

    async def ListTaskEvents(
        self, request: task_service_pb2.ListTaskEventsRequest, context: grpc.aio.ServicerContext
    ) -> task_service_pb2.ListTaskEventsResponse:
        v = Validator()
        task_id = v.uuid("task_id", request.task_id)
        size = v.page_size("page_size", request.page_size)
        if request.after_sequence < 0:
            v.add("after_sequence", "must not be negative")
        v.raise_if_invalid()
        assert task_id is not None
        filters = {"task_id": str(task_id), "after": request.after_sequence}
        position = self._deps.tokens.decode("task_events", filters, request.page_token)
        after = request.after_sequence
        if position is not None:
            if len(position) != 1 or not isinstance(position[0], int):
                raise InvalidArgumentError(
                    "invalid page_token", violations=[FieldViolation("page_token", "malformed")]
                )
            after = position[0]
        async with self._deps.db.read() as session:
            await get_task_row(session, task_id)
            rows = (
                await session.execute(
                    text(
                        "SELECT sequence, event_time, kind, data FROM task_events "
                        "WHERE task_id = :id AND sequence > :after ORDER BY sequence LIMIT :limit"
                    ),
                    {"id": task_id, "after": after, "limit": size + 1},
                )
            ).all()
        # A page stops early at a byte budget well under a default client's 4 MiB limit,
        # so large output chunks never make a response too big to read.
        budget = _EVENT_PAGE_BUDGET_BYTES
        response = task_service_pb2.ListTaskEventsResponse()
        for row in rows[:size]:
            event = event_to_proto(task_id, row)
            budget -= event.ByteSize()
            if response.events and budget < 0:
                break
            response.events.append(event)
        if len(response.events) < len(rows):
            response.next_page_token = self._deps.tokens.encode(
                "task_events", filters, [response.events[-1].sequence]
            )
        return response
