"""Schedules end to end: a real server, real scheduler processes and real RQ workers.

Tests assert outcomes (what was fired, for which nominal time, what was counted), never
timings; ``asyncio.timeout`` only guards against hangs. Where a test must show that
nothing happens (a paused schedule), it watches for a few intervals.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
import grpc
import pytest
import redis.asyncio as aioredis
from google.protobuf import duration_pb2, field_mask_pb2, timestamp_pb2

from spark_grpc._gen.spark.v1 import schedule_pb2, task_pb2
from spark_grpc._gen.spark.v1 import schedule_service_pb2 as ss
from spark_grpc._gen.spark.v1 import task_service_pb2 as ts
from spark_grpc._gen.spark.v1 import workflow_service_pb2 as ws
from spark_grpc.demo.fake_sources import FakeSources
from spark_grpc.schedules.scheduler import WAKE_CHANNEL
from tests.e2e.test_tasks import TERMINAL, echo_workflow, wait_terminal
from tests.support import (
    SchedulerProcess,
    Stubs,
    WorkerProcess,
    error_info,
    expect_error,
    field_violations,
    start_scheduler_process,
)

P = schedule_pb2
S = task_pb2
ACTIVE = (S.TASK_STATE_PENDING, S.TASK_STATE_QUEUED, S.TASK_STATE_RUNNING)


# --- helpers ---------------------------------------------------------------------------


def ts_of(dt: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(dt)
    return out


def dt_of(t: timestamp_pb2.Timestamp) -> datetime:
    return t.ToDatetime(tzinfo=UTC)


def secs(s: float) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromTimedelta(timedelta(seconds=s))
    return out


def interval(seconds: float, phase: float = 0) -> P.ScheduleSpec:
    spec = P.ScheduleSpec(interval=P.IntervalSpec(interval=secs(seconds)))
    if phase:
        spec.interval.phase.CopyFrom(secs(phase))
    return spec


def cron(expression: str, zone: str = "") -> P.ScheduleSpec:
    return P.ScheduleSpec(cron=P.CronSpec(expression=expression, time_zone=zone))


#: A spec that does not fire during a test run (Jan 1st, 00:00 UTC): for Trigger/Backfill.
YEARLY = cron("@yearly")


async def create(
    stubs: Stubs, workflow_id: str, spec: P.ScheduleSpec, **fields: object
) -> P.Schedule:
    schedule = P.Schedule(workflow_id=workflow_id, spec=spec, **fields)  # type: ignore[arg-type]
    return (
        await stubs.schedules.CreateSchedule(ss.CreateScheduleRequest(schedule=schedule))
    ).schedule


async def get(stubs: Stubs, schedule_id: str) -> P.Schedule:
    return (await stubs.schedules.GetSchedule(ss.GetScheduleRequest(id=schedule_id))).schedule


async def get_task(stubs: Stubs, task_id: str) -> task_pb2.Task:
    return (await stubs.tasks.GetTask(ts.GetTaskRequest(id=task_id))).task


async def task_count(pg: asyncpg.Connection, schedule_id: str) -> int:
    return int(
        await pg.fetchval("SELECT count(*) FROM tasks WHERE schedule_id = $1::uuid", schedule_id)
    )


async def nominal_times(pg: asyncpg.Connection, schedule_id: str) -> list[datetime]:
    """The nominal fire times of the schedule's tasks, as stored, oldest first."""
    rows = await pg.fetch(
        "SELECT context->>'nominal_fire_time' AS t FROM tasks WHERE schedule_id = $1::uuid",
        schedule_id,
    )
    return sorted(datetime.fromisoformat(r["t"]) for r in rows)


async def wait_for(predicate: Callable[[], object], timeout: float = 30) -> None:
    """Polls an async predicate until it is truthy (a hang guard, not a timing)."""
    async with asyncio.timeout(timeout):
        while not await predicate():  # type: ignore[misc]
            await asyncio.sleep(0.05)


async def wait_state(stubs: Stubs, task_id: str, states: set[int], timeout: float = 30) -> None:
    async def reached() -> bool:
        return (await get_task(stubs, task_id)).state in states

    await wait_for(reached, timeout)


async def sleep_through(seconds: float) -> None:
    """Lets ``seconds`` of schedule time pass (only to show that nothing fires)."""
    await asyncio.sleep(seconds)


# --- fixtures --------------------------------------------------------------------------


@pytest.fixture
def scheduler_dir(tmp_path: Path) -> Path:
    return tmp_path / "schedulers"


@pytest.fixture
def scheduler(server_env: dict[str, str], scheduler_dir: Path) -> Iterator[SchedulerProcess]:
    """One real `spark-grpc scheduler` process for this test."""
    proc = start_scheduler_process(server_env, scheduler_dir / "one")
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(autouse=True)
async def _cancel_leftovers(stubs: Stubs, fake: FakeSources) -> AsyncIterator[None]:
    """After each test, unhang the fake source and cancel what still runs, so the shared
    workers are free for the next test (its rows are truncated before it starts)."""
    yield
    fake.state.configure("langflow", reset=True)
    page = await stubs.tasks.ListTasks(ts.ListTasksRequest(page_size=1000, states=ACTIVE))
    for task in page.tasks:
        with contextlib.suppress(grpc.aio.AioRpcError):  # it finished meanwhile
            await stubs.tasks.CancelTask(ts.CancelTaskRequest(id=task.id, reason="test ended"))


# --- 1. input --------------------------------------------------------------------------

PAST = datetime(2020, 1, 1, tzinfo=UTC)
INVALID = {
    "cron minute 61": (dict(spec=cron("61 * * * *")), "schedule.spec.cron.expression"),
    "cron 3 fields": (dict(spec=cron("* * *")), "schedule.spec.cron.expression"),
    "cron 6 fields": (dict(spec=cron("0 0 * * * *")), "schedule.spec.cron.expression"),
    "cron unknown macro": (dict(spec=cron("@fortnightly")), "schedule.spec.cron.expression"),
    "unknown zone": (dict(spec=cron("0 * * * *", "Mars/Olympus")), "schedule.spec.cron.time_zone"),
    "interval 0.5 s": (dict(spec=interval(0.5)), "schedule.spec.interval.interval"),
    "phase >= interval": (dict(spec=interval(60, 60)), "schedule.spec.interval.phase"),
    "one-time in the past": (
        dict(spec=P.ScheduleSpec(one_time=P.OneTimeSpec(fire_time=ts_of(PAST)))),
        "schedule.spec.one_time.fire_time",
    ),
    "end before start": (
        dict(
            spec=interval(60),
            start_time=ts_of(datetime(2031, 1, 2, tzinfo=UTC)),
            end_time=ts_of(datetime(2031, 1, 1, tzinfo=UTC)),
        ),
        "schedule.end_time",
    ),
    "no spec": (dict(), "schedule.spec"),
    "jitter over 1 h": (dict(spec=interval(60), jitter=secs(3601)), "schedule.jitter"),
}


@pytest.mark.parametrize("case", list(INVALID))
async def test_invalid_schedule_is_refused_and_nothing_saved(
    stubs: Stubs, fake: FakeSources, pg: asyncpg.Connection, case: str
) -> None:
    workflow_id = await echo_workflow(stubs, fake)
    fields, field = INVALID[case]
    schedule = P.Schedule(workflow_id=workflow_id, **fields)  # type: ignore[arg-type]
    err = await expect_error(
        stubs.schedules.CreateSchedule(ss.CreateScheduleRequest(schedule=schedule)),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    violations = field_violations(err)
    assert field in violations, violations
    assert await pg.fetchval("SELECT count(*) FROM schedules") == 0


async def test_unknown_workflow_is_not_found(stubs: Stubs, pg: asyncpg.Connection) -> None:
    err = await expect_error(
        stubs.schedules.CreateSchedule(
            ss.CreateScheduleRequest(
                schedule=P.Schedule(
                    workflow_id="00000000-0000-4000-8000-000000000000", spec=interval(60)
                )
            )
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    assert error_info(err).reason == "WORKFLOW_NOT_FOUND"
    assert await pg.fetchval("SELECT count(*) FROM schedules") == 0


# --- 2. preview ------------------------------------------------------------------------


async def preview(
    stubs: Stubs, spec: P.ScheduleSpec, from_time: datetime, count: int
) -> ss.PreviewScheduleResponse:
    return await stubs.schedules.PreviewSchedule(
        ss.PreviewScheduleRequest(spec=spec, from_time=ts_of(from_time), count=count)
    )


async def test_preview_spring_forward_fires_once_at_0330(stubs: Stubs) -> None:
    # 2026-03-08: New York skips 02:00-03:00. 02:30 fires once that day, at 03:30 EDT.
    got = await preview(
        stubs, cron("30 2 * * *", "America/New_York"), datetime(2026, 3, 5, 5, tzinfo=UTC), 6
    )
    assert list(got.local_times) == [
        "2026-03-05T02:30:00-05:00",
        "2026-03-06T02:30:00-05:00",
        "2026-03-07T02:30:00-05:00",
        "2026-03-08T03:30:00-04:00",
        "2026-03-09T02:30:00-04:00",
        "2026-03-10T02:30:00-04:00",
    ]
    assert [dt_of(t) for t in got.fire_times] == [
        datetime(2026, 3, 5, 7, 30, tzinfo=UTC),
        datetime(2026, 3, 6, 7, 30, tzinfo=UTC),
        datetime(2026, 3, 7, 7, 30, tzinfo=UTC),
        datetime(2026, 3, 8, 7, 30, tzinfo=UTC),
        datetime(2026, 3, 9, 6, 30, tzinfo=UTC),
        datetime(2026, 3, 10, 6, 30, tzinfo=UTC),
    ]


async def test_preview_fall_back_fires_once_on_the_repeated_hour(stubs: Stubs) -> None:
    # 2026-11-01: New York repeats 01:00-02:00. 01:30 fires once, at its first occurrence.
    got = await preview(
        stubs, cron("30 1 * * *", "America/New_York"), datetime(2026, 10, 30, 12, tzinfo=UTC), 4
    )
    assert list(got.local_times) == [
        "2026-10-31T01:30:00-04:00",
        "2026-11-01T01:30:00-04:00",
        "2026-11-02T01:30:00-05:00",
        "2026-11-03T01:30:00-05:00",
    ]
    assert sum(t.startswith("2026-11-01") for t in got.local_times) == 1
    assert dt_of(got.fire_times[1]) == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)


async def test_preview_macros_and_interval_with_phase(stubs: Stubs) -> None:
    start = datetime(2026, 1, 1, 0, 10, tzinfo=UTC)
    hourly = await preview(stubs, cron("@hourly"), start, 3)
    assert [dt_of(t) for t in hourly.fire_times] == [
        datetime(2026, 1, 1, h, tzinfo=UTC) for h in (1, 2, 3)
    ]
    daily = await preview(stubs, cron("@daily", "Europe/Paris"), start, 2)
    assert list(daily.local_times) == ["2026-01-02T00:00:00+01:00", "2026-01-03T00:00:00+01:00"]
    assert dt_of(daily.fire_times[0]) == datetime(2026, 1, 1, 23, tzinfo=UTC)
    phased = await preview(stubs, interval(3600, 900), start, 3)
    assert [dt_of(t) for t in phased.fire_times] == [
        datetime(2026, 1, 1, 0, 15, tzinfo=UTC),
        datetime(2026, 1, 1, 1, 15, tzinfo=UTC),
        datetime(2026, 1, 1, 2, 15, tzinfo=UTC),
    ]
    assert phased.local_times[0] == "2026-01-01T00:15:00+00:00"
    # Bounds apply as on a schedule; nothing is saved.
    bounded = await stubs.schedules.PreviewSchedule(
        ss.PreviewScheduleRequest(
            spec=interval(3600, 900),
            from_time=ts_of(start),
            end_time=ts_of(datetime(2026, 1, 1, 1, 30, tzinfo=UTC)),
            count=10,
        )
    )
    assert len(bounded.fire_times) == 2
    err = await expect_error(
        stubs.schedules.PreviewSchedule(ss.PreviewScheduleRequest(spec=cron("61 * * * *"))),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "spec.cron.expression" in field_violations(err)


# --- 3. an interval schedule on a real scheduler and real workers ------------------------


async def test_interval_schedule_runs_pauses_resumes_and_triggers(
    stubs: Stubs,
    fake: FakeSources,
    workers: WorkerProcess,
    scheduler: SchedulerProcess,
    pg: asyncpg.Connection,
) -> None:
    workflow_id = await echo_workflow(stubs, fake)
    created = await create(stubs, workflow_id, interval(2), input_value="tick")
    assert created.state == P.SCHEDULE_STATE_ACTIVE
    assert dt_of(created.next_fire_time) > datetime.now(UTC) - timedelta(seconds=1)

    # Two fires, run to the end by the workers.
    async def two_succeeded() -> bool:
        rows = await pg.fetch("SELECT state FROM tasks WHERE schedule_id = $1::uuid", created.id)
        return sum(r["state"] == "SUCCEEDED" for r in rows) >= 2

    await wait_for(two_succeeded, 40)
    listed = (
        await stubs.tasks.ListTasks(ts.ListTasksRequest(schedule_id=created.id, page_size=100))
    ).tasks
    assert len(listed) >= 2 and all(t.schedule_id == created.id for t in listed)
    done = [t for t in listed if t.state == S.TASK_STATE_SUCCEEDED]
    assert len(done) >= 2 and all(t.output_text == "tick" for t in done)
    other = await stubs.workflows.RunWorkflow(ws.RunWorkflowRequest(workflow_id=workflow_id))
    assert other.task.schedule_id == ""
    relisted = await stubs.tasks.ListTasks(
        ts.ListTasksRequest(schedule_id=created.id, page_size=100)
    )
    assert other.task.id not in {t.id for t in relisted.tasks}

    # GetSchedule right after a fresh fire: counts, recent tasks, times.
    before = (await get(stubs, created.id)).fired_count
    async with asyncio.timeout(20):
        while True:
            read_at = datetime.now(UTC)
            got = await get(stubs, created.id)
            if got.fired_count > before:
                break
            await asyncio.sleep(0.05)
    rows = await pg.fetch("SELECT id::text FROM tasks WHERE schedule_id = $1::uuid", created.id)
    stored = {r["id"] for r in rows}
    assert got.fired_count == len(stored)
    assert list(got.recent_task_ids) and set(got.recent_task_ids) <= stored
    last, nxt = dt_of(got.last_fire_time), dt_of(got.next_fire_time)
    assert last.timestamp() % 2 == 0 and nxt - last == timedelta(seconds=2)
    assert nxt > read_at, "next_fire_time is in the future"
    assert max(await nominal_times(pg, created.id)) == last

    # Pause with a note: no new task over a few intervals.
    paused = (
        await stubs.schedules.PauseSchedule(ss.PauseScheduleRequest(id=created.id, note="upgrade"))
    ).schedule
    assert paused.state == P.SCHEDULE_STATE_PAUSED and paused.pause_note == "upgrade"
    count = await task_count(pg, created.id)
    await sleep_through(5)
    assert await task_count(pg, created.id) == count
    assert (await get(stubs, created.id)).state == P.SCHEDULE_STATE_PAUSED

    # Resume: it fires again.
    resumed = (
        await stubs.schedules.ResumeSchedule(ss.ResumeScheduleRequest(id=created.id))
    ).schedule
    assert resumed.state == P.SCHEDULE_STATE_ACTIVE and resumed.pause_note == ""

    async def more(n: int) -> bool:
        return await task_count(pg, created.id) > n

    await wait_for(lambda: more(count), 20)

    # Trigger fires one at once (paused, so no scheduled fire races it).
    await stubs.schedules.PauseSchedule(ss.PauseScheduleRequest(id=created.id, note="quiet"))

    async def all_finished() -> bool:
        rows = await pg.fetch("SELECT state FROM tasks WHERE schedule_id = $1::uuid", created.id)
        return all(r["state"] in ("SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT") for r in rows)

    await wait_for(all_finished, 30)
    count = await task_count(pg, created.id)
    fired_count = (await get(stubs, created.id)).fired_count
    triggered = await stubs.schedules.TriggerSchedule(ss.TriggerScheduleRequest(id=created.id))
    assert not triggered.skipped and triggered.task.id
    assert triggered.task.schedule_id == created.id
    assert await task_count(pg, created.id) == count + 1
    task = await wait_terminal(stubs, triggered.task.id, 30)
    assert task.state == S.TASK_STATE_SUCCEEDED and task.output_text == "tick"
    after = await get(stubs, created.id)
    assert after.fired_count == fired_count + 1 and after.recent_task_ids[0] == task.id


# --- 4. backfill -----------------------------------------------------------------------


async def test_backfill_last_hour_of_every_ten_minutes(
    stubs: Stubs, fake: FakeSources, pg: asyncpg.Connection
) -> None:
    workflow_id = await echo_workflow(stubs, fake)
    created = await create(stubs, workflow_id, interval(600), input_value="back")
    now = datetime.now(UTC).replace(microsecond=0)
    start = now - timedelta(hours=1)
    boundaries = [
        datetime.fromtimestamp(s, UTC)
        for s in range(int(start.timestamp()), int(now.timestamp()))
        if s % 600 == 0
    ]
    assert len(boundaries) == 6
    filled = await stubs.schedules.BackfillSchedule(
        ss.BackfillScheduleRequest(id=created.id, start_time=ts_of(start), end_time=ts_of(now))
    )
    assert len(filled.tasks) == 6 and filled.skipped_count == 0
    assert all(t.schedule_id == created.id and t.input_value == "back" for t in filled.tasks)
    assert await nominal_times(pg, created.id) == boundaries
    assert (await get(stubs, created.id)).fired_count == 6

    # SKIP: only the latest fire time runs; the others are counted as skipped.
    await pg.execute("DELETE FROM tasks")
    skipped = await stubs.schedules.BackfillSchedule(
        ss.BackfillScheduleRequest(
            id=created.id,
            start_time=ts_of(start),
            end_time=ts_of(now),
            overlap_policy=P.OVERLAP_POLICY_SKIP,
        )
    )
    assert len(skipped.tasks) == 1 and skipped.skipped_count == 5
    assert await nominal_times(pg, created.id) == boundaries[-1:]

    # A range ending in the future is refused; nothing is written.
    err = await expect_error(
        stubs.schedules.BackfillSchedule(
            ss.BackfillScheduleRequest(
                id=created.id,
                start_time=ts_of(start),
                end_time=ts_of(datetime.now(UTC) + timedelta(hours=1)),
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "end_time" in field_violations(err)
    assert await task_count(pg, created.id) == 1


async def test_backfill_honours_the_schedule_bounds(
    stubs: Stubs, fake: FakeSources, pg: asyncpg.Connection
) -> None:
    workflow_id = await echo_workflow(stubs, fake)
    now = datetime.now(UTC).replace(microsecond=0)
    bound = now - timedelta(minutes=25)
    created = await create(stubs, workflow_id, interval(600), start_time=ts_of(bound))
    filled = await stubs.schedules.BackfillSchedule(
        ss.BackfillScheduleRequest(
            id=created.id, start_time=ts_of(now - timedelta(hours=1)), end_time=ts_of(now)
        )
    )
    times = await nominal_times(pg, created.id)
    assert times and all(t >= bound for t in times), times
    assert len(filled.tasks) == len(times) in (2, 3)


# --- 5. overlap policies ---------------------------------------------------------------


async def hanging_schedule(stubs: Stubs, fake: FakeSources, policy: int) -> P.Schedule:
    workflow_id = await echo_workflow(stubs, fake)
    fake.state.configure("langflow", hang=True)
    return await create(stubs, workflow_id, YEARLY, overlap_policy=policy)


async def trigger(stubs: Stubs, schedule_id: str, policy: int = 0) -> ss.TriggerScheduleResponse:
    return await stubs.schedules.TriggerSchedule(
        ss.TriggerScheduleRequest(id=schedule_id, overlap_policy=policy)
    )


async def test_overlap_skip(
    stubs: Stubs, fake: FakeSources, workers: WorkerProcess, pg: asyncpg.Connection
) -> None:
    schedule = await hanging_schedule(stubs, fake, P.OVERLAP_POLICY_SKIP)
    first = await trigger(stubs, schedule.id)
    await wait_state(stubs, first.task.id, {S.TASK_STATE_RUNNING})
    second = await trigger(stubs, schedule.id)
    assert second.skipped and not second.HasField("task")
    assert await task_count(pg, schedule.id) == 1
    # An override runs it anyway.
    third = await trigger(stubs, schedule.id, P.OVERLAP_POLICY_ALLOW_ALL)
    assert not third.skipped and third.task.id
    assert await task_count(pg, schedule.id) == 2


async def test_overlap_allow_all(
    stubs: Stubs, fake: FakeSources, workers: WorkerProcess, pg: asyncpg.Connection
) -> None:
    schedule = await hanging_schedule(stubs, fake, P.OVERLAP_POLICY_ALLOW_ALL)
    first = await trigger(stubs, schedule.id)
    second = await trigger(stubs, schedule.id)
    assert not first.skipped and not second.skipped
    assert first.task.id != second.task.id
    await wait_state(stubs, first.task.id, {S.TASK_STATE_RUNNING})
    await wait_state(stubs, second.task.id, {S.TASK_STATE_RUNNING})


async def test_overlap_cancel_other(
    stubs: Stubs, fake: FakeSources, workers: WorkerProcess, pg: asyncpg.Connection
) -> None:
    schedule = await hanging_schedule(stubs, fake, P.OVERLAP_POLICY_CANCEL_OTHER)
    first = await trigger(stubs, schedule.id)
    await wait_state(stubs, first.task.id, {S.TASK_STATE_RUNNING})
    second = await trigger(stubs, schedule.id)
    assert not second.skipped and second.task.id and second.task.id != first.task.id
    cancelled = await get_task(stubs, first.task.id)
    assert cancelled.state == S.TASK_STATE_CANCELLED
    assert "CANCEL_OTHER" in cancelled.error.message
    await wait_state(stubs, second.task.id, {S.TASK_STATE_RUNNING})
    assert await task_count(pg, schedule.id) == 2


async def test_overlap_buffer_one_fires_after_the_run_ends(
    stubs: Stubs,
    fake: FakeSources,
    workers: WorkerProcess,
    server_env: dict[str, str],
    scheduler_dir: Path,
    pg: asyncpg.Connection,
) -> None:
    schedule = await hanging_schedule(stubs, fake, P.OVERLAP_POLICY_BUFFER_ONE)
    first = await trigger(stubs, schedule.id)
    await wait_state(stubs, first.task.id, {S.TASK_STATE_RUNNING})
    second = await trigger(stubs, schedule.id)
    assert not second.skipped and not second.HasField("task"), "buffered, not skipped"
    third = await trigger(stubs, schedule.id)
    assert third.skipped and not third.HasField("task"), "only one run waits"
    assert await task_count(pg, schedule.id) == 1
    buffered_at = await pg.fetchval(
        "SELECT buffered_fire_time FROM schedules WHERE id = $1::uuid", schedule.id
    )
    assert buffered_at is not None

    # The run ends; the scheduler (started now: a running one sleeps through the buffered
    # trigger, see test_buffering_trigger_wakes_the_schedulers) fires the buffered run.
    fake.state.configure("langflow", reset=True)
    await stubs.tasks.CancelTask(ts.CancelTaskRequest(id=first.task.id, reason="done"))
    proc = await asyncio.to_thread(start_scheduler_process, server_env, scheduler_dir / "buf")
    try:

        async def buffered_fired() -> bool:
            return await task_count(pg, schedule.id) == 2

        await wait_for(buffered_fired, 30)
    finally:
        proc.stop()
    row = await pg.fetchrow(
        "SELECT id::text, context->>'nominal_fire_time' AS t FROM tasks "
        "WHERE schedule_id = $1::uuid AND id <> $2::uuid",
        schedule.id,
        first.task.id,
    )
    assert datetime.fromisoformat(row["t"]) == buffered_at
    assert (await wait_terminal(stubs, row["id"], 30)).state == S.TASK_STATE_SUCCEEDED
    got = await get(stubs, schedule.id)
    assert got.fired_count == 2 and got.recent_task_ids[0] == row["id"]
    assert (
        await pg.fetchval(
            "SELECT buffered_fire_time FROM schedules WHERE id = $1::uuid", schedule.id
        )
        is None
    )


async def test_buffering_trigger_wakes_the_schedulers(
    stubs: Stubs, fake: FakeSources, workers: WorkerProcess, redis_client: aioredis.Redis
) -> None:
    schedule = await hanging_schedule(stubs, fake, P.OVERLAP_POLICY_BUFFER_ONE)
    first = await trigger(stubs, schedule.id)
    await wait_state(stubs, first.task.id, {S.TASK_STATE_RUNNING})
    async with redis_client.pubsub() as pubsub:
        await pubsub.subscribe(WAKE_CHANNEL)
        await pubsub.get_message(timeout=1)  # the subscribe confirmation
        second = await trigger(stubs, schedule.id)
        assert not second.skipped and not second.HasField("task")
        # The service publishes before it answers; two seconds only guard the read.
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
    assert message is not None, "a buffered run changes the schedule: schedulers are woken"


# --- 6. update -------------------------------------------------------------------------


async def test_update_with_mask_recomputes_next_fire_time(
    stubs: Stubs, fake: FakeSources, pg: asyncpg.Connection
) -> None:
    workflow_id = await echo_workflow(stubs, fake)
    created = await create(
        stubs, workflow_id, interval(3600), input_value="old", display_name="nightly"
    )
    assert dt_of(created.next_fire_time).timestamp() % 3600 == 0
    before = datetime.now(UTC)
    updated = (
        await stubs.schedules.UpdateSchedule(
            ss.UpdateScheduleRequest(
                schedule=P.Schedule(
                    id=created.id,
                    spec=interval(7200, 60),
                    input_value="new",
                    display_name="ignored: not in the mask",
                ),
                update_mask=field_mask_pb2.FieldMask(paths=["spec", "input_value"]),
            )
        )
    ).schedule
    after = datetime.now(UTC)
    nxt = dt_of(updated.next_fire_time)
    assert nxt.timestamp() % 7200 == 60
    assert before < nxt <= after + timedelta(seconds=7200)
    assert updated.input_value == "new" and updated.display_name == "nightly"
    assert updated.spec.interval.interval.seconds == 7200
    stored = await pg.fetchrow(
        "SELECT input_value, next_fire_time, display_name FROM schedules WHERE id = $1::uuid",
        created.id,
    )
    assert stored["input_value"] == "new" and stored["next_fire_time"] == nxt

    # A cron spec: the next 03:00 in Tokyo.
    as_cron = (
        await stubs.schedules.UpdateSchedule(
            ss.UpdateScheduleRequest(
                schedule=P.Schedule(id=created.id, spec=cron("0 3 * * *", "Asia/Tokyo")),
                update_mask=field_mask_pb2.FieldMask(paths=["spec"]),
            )
        )
    ).schedule
    local = dt_of(as_cron.next_fire_time).astimezone(ZoneInfo("Asia/Tokyo"))
    assert (local.hour, local.minute) == (3, 0)
    assert dt_of(as_cron.next_fire_time) - datetime.now(UTC) <= timedelta(days=1)

    # workflow_id cannot change; nothing is written.
    other = "00000000-0000-4000-8000-000000000001"
    err = await expect_error(
        stubs.schedules.UpdateSchedule(
            ss.UpdateScheduleRequest(
                schedule=P.Schedule(id=created.id, workflow_id=other),
                update_mask=field_mask_pb2.FieldMask(paths=["workflow_id"]),
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert field_violations(err)
    err = await expect_error(
        stubs.schedules.UpdateSchedule(
            ss.UpdateScheduleRequest(
                schedule=P.Schedule(id=created.id, spec=interval(0.5)),
                update_mask=field_mask_pb2.FieldMask(paths=["spec"]),
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "schedule.spec.interval.interval" in field_violations(err)
    again = await get(stubs, created.id)
    assert again.workflow_id == workflow_id and again.spec == as_cron.spec


# --- 7. deleting a workflow with schedules -----------------------------------------------


async def test_delete_workflow_with_schedules(
    stubs: Stubs, fake: FakeSources, pg: asyncpg.Connection
) -> None:
    workflow_id = await echo_workflow(stubs, fake)
    await create(stubs, workflow_id, interval(3600))
    await create(stubs, workflow_id, YEARLY)
    err = await expect_error(
        stubs.workflows.DeleteWorkflow(ws.DeleteWorkflowRequest(id=workflow_id)),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert error_info(err).reason == "WORKFLOW_HAS_SCHEDULES"
    assert await pg.fetchval("SELECT count(*) FROM schedules") == 2
    assert await pg.fetchval("SELECT count(*) FROM workflows") == 1
    await stubs.workflows.DeleteWorkflow(ws.DeleteWorkflowRequest(id=workflow_id, force=True))
    assert await pg.fetchval("SELECT count(*) FROM schedules") == 0
    assert await pg.fetchval("SELECT count(*) FROM workflows") == 0


# --- 8. two schedulers, many ticks -------------------------------------------------------


async def test_two_schedulers_fire_every_time_exactly_once(
    stubs: Stubs,
    fake: FakeSources,
    server_env: dict[str, str],
    scheduler_dir: Path,
    pg: asyncpg.Connection,
) -> None:
    workflow_id = await echo_workflow(stubs, fake)
    schedules = [
        await create(stubs, workflow_id, interval(1), overlap_policy=P.OVERLAP_POLICY_ALLOW_ALL)
        for _ in range(20)
    ]
    replicas = [start_scheduler_process(server_env, scheduler_dir / name) for name in ("a", "b")]
    try:
        await sleep_through(8)
    finally:
        for proc in replicas:
            proc.stop()
    for schedule in schedules:
        times = await nominal_times(pg, schedule.id)
        assert len(times) >= 4, f"{schedule.id} fired {len(times)} time(s)"
        assert len(set(times)) == len(times), f"{schedule.id} fired a time twice"
        steps = {b - a for a, b in itertools.pairwise(times)}
        got = await get(stubs, schedule.id)
        assert steps == {timedelta(seconds=1)}, (
            f"{schedule.id}: gaps {sorted(steps)}; missed_count={got.missed_count}"
        )
        assert got.fired_count == len(times) and got.last_fire_time == ts_of(times[-1])
    logs = [proc.log() for proc in replicas]
    assert all("Traceback" not in log for log in logs), logs


# --- 9. restart across due times ---------------------------------------------------------


async def test_restart_applies_catch_up_window(
    stubs: Stubs,
    fake: FakeSources,
    workers: WorkerProcess,
    server_env: dict[str, str],
    scheduler_dir: Path,
    pg: asyncpg.Connection,
) -> None:
    workflow_id = await echo_workflow(stubs, fake)
    schedule = await create(
        stubs,
        workflow_id,
        interval(2),
        catchup_window=secs(3),
        overlap_policy=P.OVERLAP_POLICY_ALLOW_ALL,
    )
    first = start_scheduler_process(server_env, scheduler_dir / "first")
    try:

        async def fired() -> bool:
            return await task_count(pg, schedule.id) >= 1

        await wait_for(fired, 20)
    finally:
        first.stop()
    stopped = await get(stubs, schedule.id)
    before_times = await nominal_times(pg, schedule.id)
    due_from = dt_of(stopped.next_fire_time)
    assert before_times[-1] == dt_of(stopped.last_fire_time)
    assert due_from == before_times[-1] + timedelta(seconds=2)

    await sleep_through(6)  # several due times pass with no scheduler
    second = start_scheduler_process(server_env, scheduler_dir / "second")
    try:

        async def fired_after_restart(n: int) -> bool:
            return await task_count(pg, schedule.id) >= len(before_times) + n

        await wait_for(lambda: fired_after_restart(1), 20)
        caught_up = await get(stubs, schedule.id)
        await wait_for(lambda: fired_after_restart(2), 20)
    finally:
        second.stop()
    times = await nominal_times(pg, schedule.id)
    assert times[: len(before_times)] == before_times, "state survives the restart"
    new = times[len(before_times) :]
    latest = new[0]
    # One fire for the missed period: the latest due time (inside the 3 s window).
    assert latest >= due_from + timedelta(seconds=2), "several due times were missed"
    assert (latest - due_from) % timedelta(seconds=2) == timedelta(0)
    missed = (latest - due_from) // timedelta(seconds=2)
    assert caught_up.missed_count - stopped.missed_count == missed
    assert dt_of(caught_up.last_fire_time) == latest
    # Then it fires normally: every 2 s, each time once.
    assert [b - a for a, b in itertools.pairwise(new)] == [timedelta(seconds=2)] * (len(new) - 1)
    final = await get(stubs, schedule.id)
    assert final.missed_count == caught_up.missed_count
    assert final.fired_count == len(times)
    done = await wait_terminal(stubs, (await get(stubs, schedule.id)).recent_task_ids[0], 30)
    assert done.state in TERMINAL
