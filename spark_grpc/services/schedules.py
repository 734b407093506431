"""ScheduleService: cron, interval and one-time schedules with overlap and catch-up."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from google.protobuf import duration_pb2, timestamp_pb2
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from spark_grpc import defaults
from spark_grpc._gen.spark.v1 import schedule_pb2, schedule_service_pb2, schedule_service_pb2_grpc
from spark_grpc.db.idempotency import run_idempotent
from spark_grpc.db.keyset import keyset_position
from spark_grpc.domain import schedules as maths
from spark_grpc.domain.tasks import CANCELLABLE, CANCELLED, Failure, TaskState
from spark_grpc.errors import (
    FailedPreconditionError,
    FieldViolation,
    InvalidArgumentError,
    NotFoundError,
)
from spark_grpc.schedules.firing import (
    Overlap,
    WorkflowOfRow,
    active_tasks,
    fire,
    new_scheduled_task,
    spec_from_json,
    spec_to_json,
)
from spark_grpc.schedules.scheduler import announce_change, next_times
from spark_grpc.services.convert import struct, struct_to_dict, timestamp
from spark_grpc.services.deps import ServiceDeps
from spark_grpc.services.masks import mask_paths
from spark_grpc.services.tasks import task_to_proto
from spark_grpc.tasks import store
from spark_grpc.tasks.queue import enqueue_after_commit
from spark_grpc.validation import Validator

_STATE_NUMBERS = {
    "ACTIVE": schedule_pb2.SCHEDULE_STATE_ACTIVE,
    "PAUSED": schedule_pb2.SCHEDULE_STATE_PAUSED,
    "COMPLETED": schedule_pb2.SCHEDULE_STATE_COMPLETED,
}
_STATES_BY_NUMBER = {v: k for k, v in _STATE_NUMBERS.items()}
_OVERLAPS = {
    schedule_pb2.OVERLAP_POLICY_SKIP: Overlap.SKIP,
    schedule_pb2.OVERLAP_POLICY_BUFFER_ONE: Overlap.BUFFER_ONE,
    schedule_pb2.OVERLAP_POLICY_ALLOW_ALL: Overlap.ALLOW_ALL,
    schedule_pb2.OVERLAP_POLICY_CANCEL_OTHER: Overlap.CANCEL_OTHER,
}
_OVERLAP_NUMBERS = {v.value: k for k, v in _OVERLAPS.items()}
_UPDATABLE = (
    "display_name",
    "spec",
    "start_time",
    "end_time",
    "jitter",
    "input_value",
    "tweaks",
    "overlap_policy",
    "catchup_window",
)
_MAX_CATCHUP_S = 30 * 86400.0
_MAX_BACKFILL_RUNS = 10_000
_RECENT = 10


def _dt(ts: timestamp_pb2.Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


def _seconds(d: duration_pb2.Duration) -> float:
    return float(d.ToTimedelta().total_seconds())


def spec_from_proto(spec: schedule_pb2.ScheduleSpec, v: Validator, field: str) -> maths.Spec | None:
    """The domain spec, or None with violations recorded."""
    kind = spec.WhichOneof("kind")
    try:
        if kind == "cron":
            domain: maths.Spec = maths.CronSpec(spec.cron.expression, spec.cron.time_zone or "UTC")
            prefix = f"{field}.cron"
        elif kind == "interval":
            domain = maths.IntervalSpec(
                _seconds(spec.interval.interval), _seconds(spec.interval.phase)
            )
            prefix = f"{field}.interval"
        elif kind == "one_time":
            domain = maths.OneTimeSpec(_dt(spec.one_time.fire_time))
            prefix = f"{field}.one_time"
        else:
            v.add(field, "required: set one of cron, interval or one_time")
            return None
        maths.validate(domain)
    except maths.SpecError as err:
        v.add(f"{prefix}.{err.field}", str(err))
        return None
    return domain


def _spec_to_proto(data: dict[str, Any]) -> schedule_pb2.ScheduleSpec:
    spec = spec_from_json(data)
    message = schedule_pb2.ScheduleSpec()
    if isinstance(spec, maths.CronSpec):
        message.cron.expression = spec.expression
        message.cron.time_zone = spec.time_zone
    elif isinstance(spec, maths.IntervalSpec):
        message.interval.interval.FromTimedelta(timedelta(seconds=spec.interval_s))
        message.interval.phase.FromTimedelta(timedelta(seconds=spec.phase_s))
    else:
        message.one_time.fire_time.FromDatetime(spec.fire_time)
    return message


def schedule_to_proto(row: Any, recent: list[uuid.UUID]) -> schedule_pb2.Schedule:
    """A stored schedule as a client sees it."""
    message = schedule_pb2.Schedule(
        id=str(row.id),
        workflow_id=str(row.workflow_id),
        display_name=row.display_name,
        spec=_spec_to_proto(row.spec),
        start_time=timestamp(row.start_time),
        end_time=timestamp(row.end_time),
        input_value=row.input_value,
        tweaks=struct(row.tweaks or {}),
        state=_STATE_NUMBERS[row.state],
        overlap_policy=_OVERLAP_NUMBERS[row.overlap_policy],
        pause_note=row.pause_note,
        next_fire_time=timestamp(row.next_fire_time),
        last_fire_time=timestamp(row.last_fire_time),
        recent_task_ids=[str(t) for t in recent],
        missed_count=row.missed_count,
        overlap_skipped_count=row.overlap_skipped_count,
        fired_count=row.fired_count,
        create_time=timestamp(row.create_time),
        update_time=timestamp(row.update_time),
    )
    message.jitter.FromTimedelta(timedelta(seconds=row.jitter_s))
    message.catchup_window.FromTimedelta(timedelta(seconds=row.catchup_window_s))
    return message


async def _get_row(
    session: AsyncSession | AsyncConnection, schedule_id: uuid.UUID, *, lock: bool = False
) -> Any:
    row = (
        await session.execute(
            text(
                "SELECT s.*, w.retry_policy AS wf_retry_policy, w.timeout_s AS wf_timeout_s "
                "FROM schedules s JOIN workflows w ON w.id = s.workflow_id WHERE s.id = :id"
                + (" FOR UPDATE OF s" if lock else "")
            ),
            {"id": schedule_id},
        )
    ).one_or_none()
    if row is None:
        raise NotFoundError(
            f"no schedule has id {schedule_id}",
            reason="SCHEDULE_NOT_FOUND",
            metadata={"schedule_id": str(schedule_id)},
        )
    return row


async def _recent(
    session: AsyncSession | AsyncConnection, schedule_id: uuid.UUID
) -> list[uuid.UUID]:
    rows = await session.execute(
        text(
            "SELECT id FROM tasks WHERE schedule_id = :id "
            "ORDER BY create_time DESC, id DESC LIMIT :n"
        ),
        {"id": schedule_id, "n": _RECENT},
    )
    return [r.id for r in rows]


class ScheduleServicer(schedule_service_pb2_grpc.ScheduleServiceServicer):
    """Implements spark.v1.ScheduleService."""

    def __init__(self, deps: ServiceDeps) -> None:
        self._deps = deps

    def _validate_fields(
        self, v: Validator, s: schedule_pb2.Schedule, paths: set[str] | None
    ) -> dict[str, Any]:
        """Validates the (named) writable fields; returns their stored values."""

        def wanted(name: str) -> bool:
            return paths is None or name in paths

        values: dict[str, Any] = {}
        if wanted("display_name"):
            values["display_name"] = v.text(
                "schedule.display_name", s.display_name, max_length=defaults.MAX_NAME_LENGTH
            )
        if wanted("spec"):
            spec = spec_from_proto(s.spec, v, "schedule.spec")
            if spec is not None:
                values["spec"] = spec_to_json(spec)
                if isinstance(spec, maths.OneTimeSpec) and spec.fire_time <= datetime.now(UTC):
                    v.add("schedule.spec.one_time.fire_time", "must be in the future")
        if wanted("start_time"):
            values["start_time"] = _dt(s.start_time) if s.HasField("start_time") else None
        if wanted("end_time"):
            values["end_time"] = _dt(s.end_time) if s.HasField("end_time") else None
        if (
            values.get("start_time")
            and values.get("end_time")
            and values["end_time"] <= values["start_time"]
        ):
            v.add("schedule.end_time", "must be after start_time")
        if wanted("jitter"):
            values["jitter_s"] = _seconds(s.jitter)
            if not 0 <= values["jitter_s"] <= maths.MAX_JITTER_S:
                v.add("schedule.jitter", "must be between 0 and 1 h")
        if wanted("input_value"):
            if len(s.input_value.encode()) > defaults.MAX_INPUT_BYTES:
                v.add("schedule.input_value", f"must be at most {defaults.MAX_INPUT_BYTES} bytes")
            values["input_value"] = s.input_value
        if wanted("tweaks"):
            for key in s.tweaks.fields:
                v.identifier("schedule.tweaks", key)
            values["tweaks"] = struct_to_dict(s.tweaks)
        if wanted("overlap_policy"):
            v.enum("schedule.overlap_policy", s.overlap_policy, _OVERLAPS, required=False)
            values["overlap_policy"] = _OVERLAPS.get(s.overlap_policy, Overlap.SKIP).value
        if wanted("catchup_window"):
            window = _seconds(s.catchup_window)
            if not 0 <= window <= _MAX_CATCHUP_S:
                v.add("schedule.catchup_window", "must be between 0 and 30 days")
            values["catchup_window_s"] = window or maths.DEFAULT_CATCHUP_WINDOW_S
        return values

    async def CreateSchedule(
        self, request: schedule_service_pb2.CreateScheduleRequest, context: grpc.aio.ServicerContext
    ) -> schedule_service_pb2.CreateScheduleResponse:
        s = request.schedule
        v = Validator()
        workflow_id = v.uuid("schedule.workflow_id", s.workflow_id)
        values = self._validate_fields(v, s, None)
        v.request_id("request_id", request.request_id)
        v.raise_if_invalid()
        assert workflow_id is not None
        schedule_id = uuid.uuid4()
        probe = _Probe(schedule_id, values)
        nominal, actual = next_times(probe, datetime.now(UTC))
        if nominal is None:
            raise InvalidArgumentError(
                "this schedule would never fire: no fire time between now and end_time",
                violations=[FieldViolation("schedule.end_time", "no fire time before it")],
            )

        async def create(session: AsyncSession) -> schedule_service_pb2.CreateScheduleResponse:
            exists = (
                await session.execute(
                    text("SELECT 1 FROM workflows WHERE id = :id"), {"id": workflow_id}
                )
            ).scalar_one_or_none()
            if exists is None:
                raise NotFoundError(
                    f"no workflow has id {workflow_id}",
                    reason="WORKFLOW_NOT_FOUND",
                    metadata={"workflow_id": str(workflow_id)},
                )
            await session.execute(
                text(
                    "INSERT INTO schedules (id, workflow_id, display_name, spec, start_time, "
                    "end_time, jitter_s, input_value, tweaks, state, overlap_policy, "
                    "catchup_window_s, next_fire_time, next_fire_at, request_id) VALUES "
                    "(:id, :workflow_id, :display_name, CAST(:spec AS jsonb), :start_time, "
                    ":end_time, :jitter_s, :input_value, CAST(:tweaks AS jsonb), 'ACTIVE', "
                    ":overlap_policy, :catchup_window_s, :nominal, :actual, :request_id)"
                ),
                {
                    **values,
                    "spec": _json(values["spec"]),
                    "tweaks": _json(values["tweaks"]),
                    "id": schedule_id,
                    "workflow_id": workflow_id,
                    "nominal": nominal,
                    "actual": actual,
                    "request_id": request.request_id or None,
                },
            )
            row = await _get_row(session, schedule_id)
            return schedule_service_pb2.CreateScheduleResponse(schedule=schedule_to_proto(row, []))

        response = await run_idempotent(
            self._deps.db,
            "CreateSchedule",
            request,
            request.request_id,
            schedule_service_pb2.CreateScheduleResponse,
            create,
        )
        await announce_change(self._deps.redis)
        return response

    async def GetSchedule(
        self, request: schedule_service_pb2.GetScheduleRequest, context: grpc.aio.ServicerContext
    ) -> schedule_service_pb2.GetScheduleResponse:
        schedule_id = _id(request.id)
        async with self._deps.db.connection() as session:
            row = await _get_row(session, schedule_id)
            recent = await _recent(session, schedule_id)
        return schedule_service_pb2.GetScheduleResponse(schedule=schedule_to_proto(row, recent))

    async def ListSchedules(
        self, request: schedule_service_pb2.ListSchedulesRequest, context: grpc.aio.ServicerContext
    ) -> schedule_service_pb2.ListSchedulesResponse:
        v = Validator()
        size = v.page_size("page_size", request.page_size)
        workflow_id = v.uuid("workflow_id", request.workflow_id, required=False)
        v.enum("state", request.state, _STATES_BY_NUMBER, required=False)
        v.raise_if_invalid()
        filters = {"workflow_id": request.workflow_id, "state": request.state}
        position = self._deps.tokens.decode("schedules", filters, request.page_token)
        where = ["TRUE"]
        params: dict[str, Any] = {"n": size + 1}
        if workflow_id is not None:
            where.append("s.workflow_id = :workflow_id")
            params["workflow_id"] = workflow_id
        if request.state:
            where.append("s.state = :state")
            params["state"] = _STATES_BY_NUMBER[request.state]
        if position is not None:
            try:
                params["pt"], params["pid"] = (
                    datetime.fromisoformat(position[0]),
                    uuid.UUID(position[1]),
                )
            except (ValueError, TypeError, IndexError):
                raise InvalidArgumentError(
                    "invalid page_token", violations=[FieldViolation("page_token", "malformed")]
                ) from None
            where.append("(s.create_time, s.id) < (:pt, :pid)")
        async with self._deps.db.connection() as session:
            rows = (
                await session.execute(
                    text(
                        f"SELECT s.* FROM schedules s WHERE {' AND '.join(where)} "
                        "ORDER BY s.create_time DESC, s.id DESC LIMIT :n"
                    ),
                    params,
                )
            ).all()
            recents = {r.id: await _recent(session, r.id) for r in rows[:size]}
        response = schedule_service_pb2.ListSchedulesResponse(
            schedules=[schedule_to_proto(r, recents[r.id]) for r in rows[:size]]
        )
        if len(rows) > size:
            response.next_page_token = self._deps.tokens.encode(
                "schedules", filters, keyset_position(rows[size - 1])
            )
        return response

    async def UpdateSchedule(
        self, request: schedule_service_pb2.UpdateScheduleRequest, context: grpc.aio.ServicerContext
    ) -> schedule_service_pb2.UpdateScheduleResponse:
        s = request.schedule
        v = Validator()
        schedule_id = v.uuid("schedule.id", s.id)
        paths = mask_paths(
            v, request, s, _UPDATABLE, prefix="schedule", immutable=("workflow_id", "id")
        )
        values = self._validate_fields(v, s, paths)
        if not paths and not v.violations:
            v.add("update_mask", "names no field to change")
        v.raise_if_invalid()
        assert schedule_id is not None
        async with self._deps.db.connection() as session:
            row = await _get_row(session, schedule_id, lock=True)
            merged = {**row._asdict(), **values}
            nominal, actual = next_times(_Probe(schedule_id, merged), datetime.now(UTC))
            state = row.state
            if state == "COMPLETED" and nominal is not None:
                state = "ACTIVE"
            elif nominal is None and state == "ACTIVE":
                state = "COMPLETED"
            assignments = ", ".join(
                f"{k} = CAST(:{k} AS jsonb)" if k in ("spec", "tweaks") else f"{k} = :{k}"
                for k in values
            )
            await session.execute(
                text(
                    f"UPDATE schedules SET {assignments}, next_fire_time = :nominal, "
                    "next_fire_at = :actual, state = :state, update_time = clock_timestamp() "
                    "WHERE id = :id"
                ),
                {
                    **{k: _json(x) if k in ("spec", "tweaks") else x for k, x in values.items()},
                    "nominal": nominal,
                    "actual": actual,
                    "state": state,
                    "id": schedule_id,
                },
            )
            row = await _get_row(session, schedule_id)
            recent = await _recent(session, schedule_id)
        await announce_change(self._deps.redis)
        return schedule_service_pb2.UpdateScheduleResponse(schedule=schedule_to_proto(row, recent))

    async def DeleteSchedule(
        self, request: schedule_service_pb2.DeleteScheduleRequest, context: grpc.aio.ServicerContext
    ) -> schedule_service_pb2.DeleteScheduleResponse:
        schedule_id = _id(request.id)
        async with self._deps.db.connection() as session:
            deleted = (
                await session.execute(
                    text("DELETE FROM schedules WHERE id = :id RETURNING id"), {"id": schedule_id}
                )
            ).one_or_none()
            if deleted is None:
                await _get_row(session, schedule_id)  # raises NOT_FOUND
        await announce_change(self._deps.redis)
        return schedule_service_pb2.DeleteScheduleResponse()

    async def PauseSchedule(
        self, request: schedule_service_pb2.PauseScheduleRequest, context: grpc.aio.ServicerContext
    ) -> schedule_service_pb2.PauseScheduleResponse:
        v = Validator()
        schedule_id = v.uuid("id", request.id)
        v.text("note", request.note, max_length=500)
        v.raise_if_invalid()
        assert schedule_id is not None
        async with self._deps.db.connection() as session:
            row = await _get_row(session, schedule_id, lock=True)
            if row.state == "COMPLETED":
                raise FailedPreconditionError(
                    f"schedule {schedule_id} is COMPLETED; it has no fire time left to pause",
                    reason="SCHEDULE_COMPLETED",
                )
            await session.execute(
                text(
                    "UPDATE schedules SET state = 'PAUSED', pause_note = :note, "
                    "update_time = clock_timestamp() WHERE id = :id"
                ),
                {"id": schedule_id, "note": request.note},
            )
            row = await _get_row(session, schedule_id)
            recent = await _recent(session, schedule_id)
        await announce_change(self._deps.redis)
        return schedule_service_pb2.PauseScheduleResponse(schedule=schedule_to_proto(row, recent))

    async def ResumeSchedule(
        self, request: schedule_service_pb2.ResumeScheduleRequest, context: grpc.aio.ServicerContext
    ) -> schedule_service_pb2.ResumeScheduleResponse:
        schedule_id = _id(request.id)
        async with self._deps.db.connection() as session:
            row = await _get_row(session, schedule_id, lock=True)
            if row.state == "COMPLETED":
                raise FailedPreconditionError(
                    f"schedule {schedule_id} is COMPLETED; update its spec or end_time first",
                    reason="SCHEDULE_COMPLETED",
                )
            if row.state == "PAUSED":
                # A time missed while paused fires once if it is within the catch-up window.
                since = datetime.now(UTC) - timedelta(seconds=row.catchup_window_s)
                if row.last_fire_time is not None:
                    since = max(since, row.last_fire_time)
                nominal, actual = next_times(row, since)
                await session.execute(
                    text(
                        "UPDATE schedules SET state = CASE WHEN CAST(:nominal AS timestamptz) "
                        "IS NULL THEN 'COMPLETED' ELSE 'ACTIVE' END, pause_note = '', "
                        "next_fire_time = :nominal, next_fire_at = :actual, "
                        "update_time = clock_timestamp() WHERE id = :id"
                    ),
                    {"id": schedule_id, "nominal": nominal, "actual": actual},
                )
            row = await _get_row(session, schedule_id)
            recent = await _recent(session, schedule_id)
        await announce_change(self._deps.redis)
        return schedule_service_pb2.ResumeScheduleResponse(schedule=schedule_to_proto(row, recent))

    async def TriggerSchedule(
        self,
        request: schedule_service_pb2.TriggerScheduleRequest,
        context: grpc.aio.ServicerContext,
    ) -> schedule_service_pb2.TriggerScheduleResponse:
        v = Validator()
        schedule_id = v.uuid("id", request.id)
        v.enum("overlap_policy", request.overlap_policy, _OVERLAPS, required=False)
        v.raise_if_invalid()
        assert schedule_id is not None
        async with self._deps.db.connection() as session:
            row = await _get_row(session, schedule_id, lock=True)
            policy = _OVERLAPS.get(request.overlap_policy) or Overlap(row.overlap_policy)
            outcome = await fire(session, row, WorkflowOfRow(row), datetime.now(UTC), policy)
            if outcome.tasks:
                await session.execute(
                    text(
                        "UPDATE schedules SET fired_count = fired_count + 1, "
                        "update_time = clock_timestamp() WHERE id = :id"
                    ),
                    {"id": schedule_id},
                )
        for task_id in outcome.cancelled:
            await self._deps.announce_cancel(task_id)
        if outcome.buffered:
            await announce_change(self._deps.redis)  # a scheduler fires it when the run ends
        queued = await enqueue_after_commit(
            self._deps.db, self._deps.queue, [(t.id, t.timeout_s) for t in outcome.tasks]
        )
        response = schedule_service_pb2.TriggerScheduleResponse(skipped=outcome.skipped)
        if outcome.tasks:
            task = outcome.tasks[0]
            response.task.CopyFrom(task_to_proto(queued.get(task.id, task)))
        return response

    async def PreviewSchedule(
        self,
        request: schedule_service_pb2.PreviewScheduleRequest,
        context: grpc.aio.ServicerContext,
    ) -> schedule_service_pb2.PreviewScheduleResponse:
        v = Validator()
        spec = spec_from_proto(request.spec, v, "spec")
        if not 0 <= request.count <= 1000:
            v.add("count", "must be between 1 and 1000 (0 means 10)")
        v.raise_if_invalid()
        assert spec is not None
        after = _dt(request.from_time) if request.HasField("from_time") else datetime.now(UTC)
        start = _dt(request.start_time) if request.HasField("start_time") else None
        end = _dt(request.end_time) if request.HasField("end_time") else None
        tz = maths.zone(spec.time_zone) if isinstance(spec, maths.CronSpec) else UTC
        response = schedule_service_pb2.PreviewScheduleResponse()
        for t in maths.fire_times(spec, after, start=start, end=end):
            if len(response.fire_times) >= (request.count or 10):
                break
            response.fire_times.add().FromDatetime(t)
            response.local_times.append(t.astimezone(tz).isoformat())
        return response

    async def BackfillSchedule(
        self,
        request: schedule_service_pb2.BackfillScheduleRequest,
        context: grpc.aio.ServicerContext,
    ) -> schedule_service_pb2.BackfillScheduleResponse:
        v = Validator()
        schedule_id = v.uuid("id", request.id)
        v.enum("overlap_policy", request.overlap_policy, _OVERLAPS, required=False)
        now = datetime.now(UTC)
        if not request.HasField("start_time"):
            v.add("start_time", "required")
        if not request.HasField("end_time"):
            v.add("end_time", "required")
        elif _dt(request.end_time) > now + timedelta(seconds=1):
            v.add("end_time", "must not be in the future")
        if (
            request.HasField("start_time")
            and request.HasField("end_time")
            and _dt(request.end_time) <= _dt(request.start_time)
        ):
            v.add("end_time", "must be after start_time")
        v.raise_if_invalid()
        assert schedule_id is not None
        start, end = _dt(request.start_time), _dt(request.end_time)
        policy = _OVERLAPS.get(request.overlap_policy, Overlap.ALLOW_ALL)
        async with self._deps.db.connection() as session:
            row = await _get_row(session, schedule_id, lock=True)
            times = []
            for t in maths.fire_times(
                spec_from_json(row.spec),
                start - timedelta(microseconds=1),
                start=row.start_time,
                end=row.end_time,
            ):
                if t >= end:
                    break
                times.append(t)
                if len(times) > _MAX_BACKFILL_RUNS:
                    raise InvalidArgumentError(
                        f"the range holds more than {_MAX_BACKFILL_RUNS} fire times; split it",
                        violations=[FieldViolation("end_time", "range too large")],
                    )
            chosen = _backfill_times(times, policy)
            cancelled: list[uuid.UUID] = []
            if policy == Overlap.CANCEL_OTHER:
                running = await active_tasks(session, schedule_id)
                rows = await store.transition_many(
                    session,
                    running,
                    expected=CANCELLABLE,
                    to=TaskState.CANCELLED,
                    error=Failure(
                        CANCELLED,
                        f"cancelled by a CANCEL_OTHER backfill of schedule {schedule_id}",
                        False,
                    ),
                    sets="next_attempt_time = NULL",
                )
                cancelled = [r.id for r in rows]
            written = await store.insert_tasks(
                session,
                [new_scheduled_task(row, WorkflowOfRow(row), t, backfill=True) for t in chosen],
            )
            await session.execute(
                text(
                    "UPDATE schedules SET fired_count = fired_count + :n, "
                    "update_time = clock_timestamp() WHERE id = :id"
                ),
                {"id": schedule_id, "n": len(written)},
            )
        for task_id in cancelled:
            await self._deps.announce_cancel(task_id)
        tasks = [r for r, _ in written]
        queued = await enqueue_after_commit(
            self._deps.db, self._deps.queue, [(t.id, t.timeout_s) for t in tasks]
        )
        return schedule_service_pb2.BackfillScheduleResponse(
            tasks=[task_to_proto(queued.get(t.id, t)) for t in tasks],
            skipped_count=len(times) - len(chosen),
        )


def _backfill_times(times: list[datetime], policy: Overlap) -> list[datetime]:
    if not times or policy == Overlap.ALLOW_ALL:
        return times
    if policy == Overlap.BUFFER_ONE:
        return times[:1] + times[-1:] if len(times) > 1 else times
    return times[-1:]


class _Probe:
    """The fields next_times reads, for a schedule not stored yet (or being changed)."""

    def __init__(self, schedule_id: uuid.UUID, values: dict[str, Any]) -> None:
        self.id = schedule_id
        self.spec = values["spec"]
        self.start_time = values.get("start_time")
        self.end_time = values.get("end_time")
        self.jitter_s = values.get("jitter_s", 0.0)


def _id(value: str) -> uuid.UUID:
    v = Validator()
    parsed = v.uuid("id", value)
    v.raise_if_invalid()
    assert parsed is not None
    return parsed


def _json(value: Any) -> str:
    import json

    return json.dumps(value)
