"""Firing a schedule once, under an overlap policy, inside the caller's transaction.

The tasks are written with the shared task-writing function; the caller enqueues them
after its transaction commits, and announces the cancels CANCEL_OTHER made.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Row, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from spark_grpc.domain import schedules as maths
from spark_grpc.domain.tasks import CANCELLABLE, CANCELLED, Failure, RetryPolicy, TaskState
from spark_grpc.tasks import store


class Overlap(StrEnum):
    """What to do when a fire time comes while a run is still going (stored strings)."""

    SKIP = "SKIP"
    BUFFER_ONE = "BUFFER_ONE"
    ALLOW_ALL = "ALLOW_ALL"
    CANCEL_OTHER = "CANCEL_OTHER"


@dataclass
class FireOutcome:
    """What one fire did."""

    tasks: list[Row[Any]] = field(default_factory=list)
    cancelled: list[uuid.UUID] = field(default_factory=list)
    skipped: bool = False
    buffered: bool = False


class WorkflowOfRow:
    """The workflow defaults a schedule query joins in (wf_retry_policy, wf_timeout_s)."""

    def __init__(self, row: Any) -> None:
        self.retry_policy = row.wf_retry_policy
        self.timeout_s = row.wf_timeout_s


def spec_from_json(data: dict[str, Any]) -> maths.Spec:
    """The domain spec of a stored spec."""
    if "cron" in data:
        return maths.CronSpec(data["cron"]["expression"], data["cron"].get("time_zone") or "UTC")
    if "interval" in data:
        return maths.IntervalSpec(
            data["interval"]["interval_s"], data["interval"].get("phase_s", 0.0)
        )
    return maths.OneTimeSpec(datetime.fromisoformat(data["one_time"]["fire_time"]))


def spec_to_json(spec: maths.Spec) -> dict[str, Any]:
    """The stored form of a spec."""
    if isinstance(spec, maths.CronSpec):
        return {"cron": {"expression": spec.expression.strip(), "time_zone": spec.time_zone}}
    if isinstance(spec, maths.IntervalSpec):
        return {"interval": {"interval_s": spec.interval_s, "phase_s": spec.phase_s}}
    return {"one_time": {"fire_time": spec.fire_time.isoformat()}}


async def active_tasks(
    session: AsyncSession | AsyncConnection, schedule_id: uuid.UUID
) -> list[uuid.UUID]:
    """The schedule's tasks that have not finished."""
    rows = await session.execute(
        text("SELECT id FROM tasks WHERE schedule_id = :id AND state = ANY(:states)"),
        {"id": schedule_id, "states": [s.value for s in CANCELLABLE]},
    )
    return [r.id for r in rows]


async def fire(
    session: AsyncSession | AsyncConnection,
    schedule: Any,
    workflow: Any,
    nominal: datetime,
    policy: Overlap,
) -> FireOutcome:
    """Fires ``schedule`` (a locked row) for the nominal time under ``policy``.

    ``workflow`` carries the workflow's retry_policy and timeout_s.
    """
    outcome = FireOutcome()
    running = await active_tasks(session, schedule.id)
    if running and policy == Overlap.SKIP:
        outcome.skipped = True
        return outcome
    if running and policy == Overlap.BUFFER_ONE:
        if schedule.buffered_fire_time is None:
            await session.execute(
                text("UPDATE schedules SET buffered_fire_time = :t WHERE id = :id"),
                {"t": nominal, "id": schedule.id},
            )
            outcome.buffered = True
        else:
            outcome.skipped = True  # one run already waits; this one is dropped
        return outcome
    if running and policy == Overlap.CANCEL_OTHER:
        rows = await store.transition_many(
            session,
            running,
            expected=CANCELLABLE,
            to=TaskState.CANCELLED,
            error=Failure(
                CANCELLED, f"cancelled by the CANCEL_OTHER policy of schedule {schedule.id}", False
            ),
            sets="next_attempt_time = NULL",
        )
        outcome.cancelled = [r.id for r in rows]
    written = await store.insert_tasks(session, [new_scheduled_task(schedule, workflow, nominal)])
    outcome.tasks = [row for row, _ in written]
    return outcome


def new_scheduled_task(
    schedule: Any, workflow: Any, nominal: datetime, **context: Any
) -> store.NewTask:
    """The task a schedule fires for a nominal time (the workflow's retry policy and timeout)."""
    return store.NewTask(
        workflow_id=schedule.workflow_id,
        input_value=schedule.input_value,
        tweaks=schedule.tweaks or {},
        retry_policy=RetryPolicy().merged(RetryPolicy.from_json(workflow.retry_policy)),
        timeout_s=workflow.timeout_s,
        schedule_id=schedule.id,
        context={"nominal_fire_time": nominal.isoformat(), **context},
    )
