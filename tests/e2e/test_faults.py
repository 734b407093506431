"""Faults with real processes: Postgres restarted under running tasks, a scheduler killed
mid-claim. After each, every task is terminal (or correctly queued), no task ran twice at
the same time, and no event is missing from any task's log."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import asyncpg
import pytest
from google.protobuf import duration_pb2

from spark_grpc._gen.spark.v1 import (
    schedule_pb2,
)
from spark_grpc._gen.spark.v1 import (
    schedule_service_pb2 as ss,
)
from spark_grpc._gen.spark.v1 import (
    workflow_service_pb2 as ws,
)
from spark_grpc.demo.fake_sources import FakeSources
from spark_grpc.embedded import EmbeddedStack
from tests.e2e.test_tasks import echo_workflow
from tests.support import Stubs, WorkerProcess, start_scheduler_process

TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT")


async def connect(database_url: str) -> asyncpg.Connection:
    return await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))


async def assert_logs_whole(pg: asyncpg.Connection) -> dict[str, int]:
    """Every task's events are 1..last_sequence, and its attempts never overlap."""
    tasks = await pg.fetch("SELECT id, last_sequence, attempt FROM tasks")
    for task in tasks:
        events = await pg.fetch(
            "SELECT sequence, kind, data FROM task_events WHERE task_id = $1 ORDER BY sequence",
            task["id"],
        )
        assert [e["sequence"] for e in events] == list(range(1, task["last_sequence"] + 1))
        running = 0
        for e in events:
            if e["kind"] != "state_change":
                continue
            data = json.loads(e["data"])
            if data["to"] == "RUNNING":
                assert running == 0, f"task {task['id']} ran twice at once"
                running = 1
            elif data["from"] == "RUNNING":
                running = 0
    return {"tasks": len(tasks), "events": sum(t["last_sequence"] for t in tasks)}


async def test_postgres_restart_under_running_tasks(
    stack: EmbeddedStack | None,
    stubs: Stubs,
    fake: FakeSources,
    workers: WorkerProcess,
    database_url: str,
    fault_report: list[str],
) -> None:
    if stack is None:
        pytest.skip("needs the embedded Postgres to stop and start it")
    workflow_id = await echo_workflow(stubs, fake)
    fake.state.configure("langflow", delay_s=0.5)
    request = ws.RunWorkflowRequest(workflow_id=workflow_id, input_value="survive")
    request.retry_policy.initial_interval.FromMilliseconds(200)
    request.retry_policy.maximum_attempts = 10
    batch = await stubs.workflows.BatchRunWorkflows(
        ws.BatchRunWorkflowsRequest(requests=[request] * 20)
    )
    await asyncio.sleep(0.7)
    await asyncio.to_thread(stack.postgres.stop, kill=True)
    await asyncio.sleep(2)
    await asyncio.to_thread(stack.postgres.start)
    fake.state.configure("langflow", reset=True)
    pg = await connect(database_url)
    try:
        async with asyncio.timeout(120):
            while await pg.fetchval(
                "SELECT count(*) FROM tasks WHERE state <> ALL($1::text[])", list(TERMINAL)
            ):
                await asyncio.sleep(0.25)
        states = dict(await pg.fetch("SELECT state, count(*) FROM tasks GROUP BY state"))
        attempts = await pg.fetchval("SELECT max(attempt) FROM tasks")
        totals = await assert_logs_whole(pg)
    finally:
        await pg.close()
    assert states == {"SUCCEEDED": len(batch.tasks)}, states
    fault_report.append(
        f"Postgres killed and restarted under 20 running tasks: states {states}, "
        f"max attempt {attempts}, {totals['events']} events, every log whole, no overlap"
    )


async def test_scheduler_killed_mid_claim_fires_nothing_twice(
    stubs: Stubs,
    fake: FakeSources,
    server_env: dict[str, str],
    tmp_path: Path,
    database_url: str,
    fault_report: list[str],
) -> None:
    workflow_id = await echo_workflow(stubs, fake)
    for i in range(200):
        spec = schedule_pb2.ScheduleSpec(
            interval=schedule_pb2.IntervalSpec(interval=duration_pb2.Duration(seconds=1))
        )
        await stubs.schedules.CreateSchedule(
            ss.CreateScheduleRequest(
                schedule=schedule_pb2.Schedule(
                    workflow_id=workflow_id, spec=spec, input_value=f"{i}"
                )
            )
        )
    first = start_scheduler_process(server_env, tmp_path / "a")
    await asyncio.sleep(2.5)
    first.process.send_signal(signal.SIGKILL)  # mid-claim: it fires 200 schedules a second
    first.process.wait()
    second = start_scheduler_process(server_env, tmp_path / "b")
    await asyncio.sleep(3)
    second.stop()
    pg = await connect(database_url)
    try:
        rows = await pg.fetch(
            "SELECT schedule_id, context->>'nominal_fire_time' AS t, count(*) AS n FROM tasks "
            "WHERE schedule_id IS NOT NULL GROUP BY 1, 2"
        )
        missed = await pg.fetchval("SELECT sum(missed_count) FROM schedules")
        per_schedule: dict[object, list[str]] = {}
        for r in rows:
            per_schedule.setdefault(r["schedule_id"], []).append(r["t"])
    finally:
        await pg.close()
    assert rows and all(r["n"] == 1 for r in rows), "a fire time fired twice"
    assert len(per_schedule) == 200
    fault_report.append(
        f"scheduler SIGKILLed mid-claim, another started: {len(rows)} fires over 200 schedules, "
        f"0 fire times duplicated, {missed} missed times counted"
    )
