"""Task rows and their event log, in SQL.

Every state change is one statement: a conditional update (``WHERE state = ANY(expected)``,
and the attempt number where a worker acts) plus its event row, with the event's sequence
taken from the task row in the same statement. When a worker, a cancel and a sweeper race,
exactly one wins; the others get no row back and do nothing.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Row, bindparam, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from spark_grpc.db.session import record_events
from spark_grpc.domain.tasks import Failure, RetryPolicy, TaskState
from spark_grpc.errors import FieldViolation, InvalidArgumentError

#: Columns a client may see (never more than the inline output limit in size).
TASK_COLUMNS = (
    "id, workflow_id, schedule_id, state, input_value, tweaks, output, output_text, "
    "output_size_bytes, output_truncated, error, attempt, max_attempts, retry_policy, "
    "timeout_s, deadline_time, next_attempt_time, worker_name, create_time, start_time, "
    "finish_time, update_time, last_sequence, context, webhook_url"
)

Conn = AsyncSession | AsyncConnection


@dataclass(frozen=True)
class NewTask:
    """What a new task is made of, validated by the caller."""

    workflow_id: uuid.UUID
    input_value: str
    tweaks: dict[str, Any]
    retry_policy: RetryPolicy
    timeout_s: float
    deadline_time: datetime | None = None
    schedule_id: uuid.UUID | None = None
    request_id: str | None = None
    request_hash: bytes | None = None
    context: dict[str, Any] = field(default_factory=dict)
    webhook_url: str = ""


async def insert_tasks(conn: Conn, tasks: Sequence[NewTask]) -> list[tuple[Row[Any], bool]]:
    """Writes tasks as PENDING with their first event, in the caller's transaction.

    A task whose request_id exists already is not written again: the existing task is
    returned in its place (INVALID_ARGUMENT if that id came with a different request).
    Returns (row, created) pairs in the order of ``tasks``.
    """
    rows: list[Row[Any] | None] = [None] * len(tasks)
    values = [
        {
            "id": uuid.uuid4(),
            "workflow_id": t.workflow_id,
            "schedule_id": t.schedule_id,
            "input_value": t.input_value,
            "tweaks": t.tweaks,
            "max_attempts": t.retry_policy.maximum_attempts,
            "retry_policy": t.retry_policy.to_json(),
            "timeout_s": t.timeout_s,
            "deadline_time": t.deadline_time,
            "request_id": t.request_id,
            "request_hash": t.request_hash,
            "context": t.context,
            "webhook_url": t.webhook_url,
        }
        for t in tasks
    ]
    statement = text(
        f"""
        WITH new AS (
            INSERT INTO tasks (id, workflow_id, schedule_id, state, input_value, tweaks,
                               max_attempts, retry_policy, timeout_s, deadline_time,
                               next_attempt_time, request_id, request_hash, context,
                               webhook_url, last_sequence)
            SELECT v.id, v.workflow_id, v.schedule_id, 'PENDING', v.input_value, v.tweaks,
                   v.max_attempts, v.retry_policy, v.timeout_s, v.deadline_time,
                   clock_timestamp(), v.request_id, decode(v.request_hash, 'hex'), v.context,
                   v.webhook_url, 1
            FROM jsonb_to_recordset(:rows) AS v(
                id uuid, workflow_id uuid, schedule_id uuid, input_value text, tweaks jsonb,
                max_attempts int, retry_policy jsonb, timeout_s float8,
                deadline_time timestamptz, request_id text, request_hash text, context jsonb,
                webhook_url text)
            ON CONFLICT (request_id) WHERE request_id IS NOT NULL DO NOTHING
            RETURNING {TASK_COLUMNS}, request_id
        ), ev AS (
            INSERT INTO task_events (task_id, sequence, event_time, kind, data)
            SELECT id, 1, create_time, 'state_change',
                   jsonb_build_object('from', '', 'to', 'PENDING', 'attempt', 0)
            FROM new
        )
        SELECT * FROM new
        """
    ).bindparams(bindparam("rows", type_=JSONB))
    encoded = [
        {**v, "request_hash": t.request_hash.hex() if t.request_hash else None}
        for v, t in zip(values, tasks, strict=True)
    ]
    inserted = (
        await conn.execute(statement, {"rows": json.loads(json.dumps(encoded, default=str))})
    ).all()
    record_events(
        conn,
        [
            {
                "task_id": row.id,
                "sequence": 1,
                "kind": "state_change",
                "data": {"from": "", "to": "PENDING", "attempt": 0},
                "event_time": row.create_time,
                "workflow_id": row.workflow_id,
                "schedule_id": row.schedule_id,
            }
            for row in inserted
        ],
    )
    by_id = {row.id: row for row in inserted}
    missing: list[int] = []
    for i, v in enumerate(values):
        row = by_id.get(v["id"])
        if row is None:
            missing.append(i)
        rows[i] = row
    for i in missing:
        rows[i] = await _existing_for_request(conn, tasks[i], index=i, batch=len(tasks) > 1)
    return [(r, i not in missing) for i, r in enumerate(rows) if r is not None]


async def _existing_for_request(conn: Conn, task: NewTask, *, index: int, batch: bool) -> Row[Any]:
    row = (
        await conn.execute(
            text(f"SELECT {TASK_COLUMNS}, request_hash FROM tasks WHERE request_id = :rid"),
            {"rid": task.request_id},
        )
    ).one()
    if row.request_hash != task.request_hash:
        field = f"requests[{index}].request_id" if batch else "request_id"
        raise InvalidArgumentError(
            "request_id was already used for a different run; use a new request_id",
            violations=[FieldViolation(field, "already used for a different request")],
            reason="REQUEST_ID_REUSED",
        )
    return row


async def transition(
    conn: Conn,
    task_id: uuid.UUID,
    *,
    expected: Iterable[TaskState],
    to: TaskState,
    attempt: int | None = None,
    sets: str = "",
    params: dict[str, Any] | None = None,
    error: Failure | None = None,
    extra_where: str = "",
) -> Row[Any] | None:
    """Moves one task; see :func:`transition_many`. None when it was not in ``expected``."""
    rows = await transition_many(
        conn,
        [task_id],
        expected=expected,
        to=to,
        attempt=attempt,
        sets=sets,
        params=params,
        error=error,
        extra_where=extra_where,
    )
    return rows[0] if rows else None


async def transition_many(
    conn: Conn,
    task_ids: Sequence[uuid.UUID],
    *,
    expected: Iterable[TaskState],
    to: TaskState,
    attempt: int | None = None,
    sets: str = "",
    params: dict[str, Any] | None = None,
    error: Failure | None = None,
    extra_where: str = "",
) -> list[Row[Any]]:
    """Moves tasks from one of ``expected`` to ``to`` and records an event each, atomically.

    Args:
        attempt: when given, the change applies only to that attempt (a stale worker
            whose attempt was taken over cannot commit).
        sets: extra ``col = expr`` assignments (SQL, with bind names from ``params``).
        error: the failure behind the change, stored on the task and in the event.
        extra_where: an extra SQL condition on the task row (alias ``t``).

    Returns:
        The rows after the change, of the tasks that were in an expected state.
    """
    params = dict(params or {})
    params.update(
        ids=list(task_ids),
        expected=[s.value for s in expected],
        to=to.value,
        error=json.dumps(error.to_json()) if error else None,
    )
    conditions = "t.id = ANY(:ids) AND t.state = ANY(:expected)"
    if attempt is not None:
        conditions += " AND t.attempt = :attempt"
        params["attempt"] = attempt
    if extra_where:
        conditions += f" AND ({extra_where})"
    assignments = ", " + sets if sets else ""
    if error is not None:
        assignments += ", error = CAST(:error AS jsonb)"
    if to in (TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED, TaskState.TIMED_OUT):
        assignments += ", finish_time = clock_timestamp(), lease_expire_time = NULL"
    statement = text(
        f"""
        WITH old AS (
            SELECT t.id, t.state FROM tasks t WHERE {conditions} ORDER BY t.id FOR UPDATE
        ), upd AS (
            UPDATE tasks SET state = :to, last_sequence = tasks.last_sequence + 1,
                   update_time = clock_timestamp(){assignments}
            FROM old WHERE tasks.id = old.id
            RETURNING {", ".join("tasks." + c.strip() for c in TASK_COLUMNS.split(","))},
                      old.state AS from_state, tasks.job_id
        ), ev AS (
            INSERT INTO task_events (task_id, sequence, event_time, kind, data)
            SELECT id, last_sequence, update_time, 'state_change',
                   jsonb_strip_nulls(jsonb_build_object(
                       'from', from_state, 'to', state, 'attempt', attempt,
                       'error', CAST(:error AS jsonb)))
            FROM upd
        ), wh AS (
            INSERT INTO webhook_deliveries (id, task_id, url, payload, state, next_attempt_time)
            SELECT gen_random_uuid(), id, webhook_url,
                   jsonb_strip_nulls(jsonb_build_object(
                       'task_id', id, 'workflow_id', workflow_id, 'schedule_id', schedule_id,
                       'state', state, 'attempt', attempt, 'finish_time', update_time,
                       'error', error, 'output_text', left(output_text, 4096),
                       'output_truncated', output_truncated)),
                   'PENDING', clock_timestamp()
            FROM upd
            WHERE webhook_url <> ''
              AND state IN ('SUCCEEDED', 'FAILED', 'CANCELLED', 'TIMED_OUT')
        )
        SELECT * FROM upd
        """
    )
    rows = list((await conn.execute(statement, params)).all())
    record_events(
        conn,
        [
            {
                "task_id": row.id,
                "sequence": row.last_sequence,
                "kind": "state_change",
                "data": {
                    "from": row.from_state,
                    "to": row.state,
                    "attempt": row.attempt,
                    **({"error": error.to_json()} if error else {}),
                },
                "event_time": row.update_time,
                "workflow_id": row.workflow_id,
                "schedule_id": row.schedule_id,
            }
            for row in rows
        ],
    )
    return rows


async def append_events(
    conn: Conn, task_id: uuid.UUID, attempt: int, events: Sequence[tuple[str, dict[str, Any]]]
) -> int:
    """Appends progress / log / output-chunk events while ``attempt`` still runs.

    Returns the number appended: 0 when the attempt no longer owns the task (cancelled,
    or taken over after its lease expired), so nothing follows a terminal event.
    """
    if not events:
        return 0
    last = (
        await conn.execute(
            text(
                "UPDATE tasks SET last_sequence = last_sequence + :n, "
                "update_time = clock_timestamp() WHERE id = :id AND state = 'RUNNING' "
                "AND attempt = :attempt RETURNING last_sequence"
            ),
            {"id": task_id, "attempt": attempt, "n": len(events)},
        )
    ).scalar_one_or_none()
    if last is None:
        return 0
    first = last - len(events) + 1
    written = await conn.execute(
        text(
            "INSERT INTO task_events (task_id, sequence, event_time, kind, data) "
            "SELECT :id, e.seq, clock_timestamp(), e.kind, e.data "
            "FROM jsonb_to_recordset(:events) AS e(seq bigint, kind text, data jsonb) "
            "RETURNING sequence, event_time, kind, data"
        ).bindparams(bindparam("events", type_=JSONB)),
        {
            "id": task_id,
            "events": [{"seq": first + i, "kind": k, "data": d} for i, (k, d) in enumerate(events)],
        },
    )
    record_events(
        conn,
        [
            {
                "task_id": task_id,
                "sequence": r.sequence,
                "kind": r.kind,
                "data": r.data,
                "event_time": r.event_time,
            }
            for r in written
        ],
    )
    return len(events)
