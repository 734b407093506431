"""Running workflows on real RQ workers against the fake sources."""

from __future__ import annotations

import asyncio

import asyncpg
import grpc
import pytest
import redis.asyncio as aioredis
from google.protobuf import duration_pb2

from spark_grpc._gen.spark.v1 import (
    task_pb2,
)
from spark_grpc._gen.spark.v1 import (
    task_service_pb2 as ts,
)
from spark_grpc._gen.spark.v1 import (
    workflow_service_pb2 as ws,
)
from spark_grpc.demo import fake_data
from spark_grpc.demo.fake_sources import FakeSources
from tests.e2e.test_sources_api import create_source
from tests.support import (
    Stubs,
    WorkerProcess,
    error_info,
    expect_error,
    field_violations,
)

S = task_pb2
TERMINAL = {
    S.TASK_STATE_SUCCEEDED,
    S.TASK_STATE_FAILED,
    S.TASK_STATE_CANCELLED,
    S.TASK_STATE_TIMED_OUT,
}


@pytest.fixture(autouse=True)
async def _flush_redis(redis_client: aioredis.Redis) -> None:
    await redis_client.flushdb()


async def echo_workflow(stubs: Stubs, fake: FakeSources, **policy: object) -> str:
    source = await create_source(stubs, fake.url("langflow"))
    wf = await stubs.workflows.ImportWorkflow(
        ws.ImportWorkflowRequest(source_id=source.id, remote_flow_id=fake_data.FLOW_ECHO)
    )
    return wf.workflow.id


async def wait_terminal(stubs: Stubs, task_id: str, timeout: float = 60) -> task_pb2.Task:
    async with asyncio.timeout(timeout):
        while True:
            task = (await stubs.tasks.GetTask(ts.GetTaskRequest(id=task_id))).task
            if task.state in TERMINAL:
                return task
            await asyncio.sleep(0.05)


async def events_of(stubs: Stubs, task_id: str) -> list[task_pb2.TaskEvent]:
    events: list[task_pb2.TaskEvent] = []
    token = ""
    while True:
        page = await stubs.tasks.ListTaskEvents(
            ts.ListTaskEventsRequest(task_id=task_id, page_size=1000, page_token=token)
        )
        events += page.events
        token = page.next_page_token
        if not token:
            return events


def transitions(events: list[task_pb2.TaskEvent]) -> list[tuple[int, int]]:
    return [
        (e.state_change.from_state, e.state_change.to_state)
        for e in events
        if e.HasField("state_change")
    ]


async def test_run_returns_at_once_and_succeeds(
    stubs: Stubs, fake: FakeSources, workers: WorkerProcess
) -> None:
    workflow_id = await echo_workflow(stubs, fake)
    run = await stubs.workflows.RunWorkflow(
        ws.RunWorkflowRequest(workflow_id=workflow_id, input_value="hello there")
    )
    assert run.task.state in (S.TASK_STATE_PENDING, S.TASK_STATE_QUEUED, S.TASK_STATE_RUNNING)
    assert run.task.workflow_id == workflow_id and run.task.input_value == "hello there"
    task = await wait_terminal(stubs, run.task.id)
    assert task.state == S.TASK_STATE_SUCCEEDED, task.error
    assert task.output_text == "hello there"
    assert task.attempt == 1 and task.worker_name and task.finish_time.seconds
    events = await events_of(stubs, task.id)
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert transitions(events)[0] == (S.TASK_STATE_UNSPECIFIED, S.TASK_STATE_PENDING)
    assert transitions(events)[-1] == (S.TASK_STATE_RUNNING, S.TASK_STATE_SUCCEEDED)
    streamed = "".join(
        e.output_chunk.text
        for e in events
        if e.HasField("output_chunk") and e.output_chunk.source_event == "token"
    )
    assert streamed.split() == ["hello", "there"]
    wf = (await stubs.workflows.GetWorkflow(ws.GetWorkflowRequest(id=workflow_id))).workflow
    assert (wf.latest_run_state, wf.task_count, wf.failed_task_count) == (
        S.TASK_STATE_SUCCEEDED,
        1,
        0,
    )


async def test_tweaks_reach_the_source(
    stubs: Stubs, fake: FakeSources, workers: WorkerProcess
) -> None:
    workflow_id = await echo_workflow(stubs, fake)
    wf = (await stubs.workflows.GetWorkflow(ws.GetWorkflowRequest(id=workflow_id))).workflow
    middle = next(c.id for c in wf.components if c.type == "EchoPrefix")
    request = ws.RunWorkflowRequest(workflow_id=workflow_id, input_value="x")
    request.tweaks.update({middle: {"prefix": "tweaked: "}})
    run = await stubs.workflows.RunWorkflow(request)
    task = await wait_terminal(stubs, run.task.id)
    assert task.output_text == "tweaked: x"


async def test_failing_source_retries_then_fails_with_attempts_recorded(
    stubs: Stubs, fake: FakeSources, workers: WorkerProcess
) -> None:
    workflow_id = await echo_workflow(stubs, fake)
    fake.state.configure("langflow", fail_times=100, fail_status=500)
    request = ws.RunWorkflowRequest(workflow_id=workflow_id, input_value="x")
    request.retry_policy.maximum_attempts = 3
    request.retry_policy.initial_interval.FromMilliseconds(100)
    run = await stubs.workflows.RunWorkflow(request)
    task = await wait_terminal(stubs, run.task.id)
    assert task.state == S.TASK_STATE_FAILED
    assert (
        task.attempt == 3
        and task.error.kind == "SOURCE_SERVER_ERROR"
        and task.error.http_status == 500
    )
    changes = transitions(await events_of(stubs, task.id))
    assert changes.count((S.TASK_STATE_RUNNING, S.TASK_STATE_PENDING)) == 2
    assert changes[-1] == (S.TASK_STATE_RUNNING, S.TASK_STATE_FAILED)


async def test_fail_twice_then_succeed(
    stubs: Stubs, fake: FakeSources, workers: WorkerProcess, pg: asyncpg.Connection
) -> None:
    workflow_id = await echo_workflow(stubs, fake)
    fake.state.configure("langflow", fail_times=2, fail_status=503)
    request = ws.RunWorkflowRequest(workflow_id=workflow_id, input_value="third time")
    request.retry_policy.initial_interval.FromMilliseconds(100)
    task = await wait_terminal(stubs, (await stubs.workflows.RunWorkflow(request)).task.id)
    assert (
        task.state == S.TASK_STATE_SUCCEEDED
        and task.attempt == 3
        and task.output_text == "third time"
    )
    assert await pg.fetchval("SELECT count(*) FROM tasks") == 1, "attempts live on one task row"


async def test_401_fails_at_once(stubs: Stubs, fake: FakeSources, workers: WorkerProcess) -> None:
    workflow_id = await echo_workflow(stubs, fake)
    fake.state.configure("langflow", require_api_key="needed")
    task = await wait_terminal(
        stubs,
        (await stubs.workflows.RunWorkflow(ws.RunWorkflowRequest(workflow_id=workflow_id))).task.id,
    )
    assert task.state == S.TASK_STATE_FAILED and task.attempt == 1
    assert task.error.kind == "SOURCE_UNAUTHENTICATED" and not task.error.retryable


async def test_timeout_ends_timed_out(
    stubs: Stubs, fake: FakeSources, workers: WorkerProcess
) -> None:
    workflow_id = await echo_workflow(stubs, fake)
    fake.state.configure("langflow", hang=True)
    request = ws.RunWorkflowRequest(
        workflow_id=workflow_id, timeout=duration_pb2.Duration(seconds=1)
    )
    request.retry_policy.maximum_attempts = 1
    task = await wait_terminal(stubs, (await stubs.workflows.RunWorkflow(request)).task.id)
    assert task.state == S.TASK_STATE_TIMED_OUT and task.error.kind == "SOURCE_TIMEOUT"


async def test_cancel_running_task(stubs: Stubs, fake: FakeSources, workers: WorkerProcess) -> None:
    workflow_id = await echo_workflow(stubs, fake)
    fake.state.configure("langflow", hang=True)
    run = await stubs.workflows.RunWorkflow(ws.RunWorkflowRequest(workflow_id=workflow_id))
    async with asyncio.timeout(30):
        while (
            await stubs.tasks.GetTask(ts.GetTaskRequest(id=run.task.id))
        ).task.state != S.TASK_STATE_RUNNING:
            await asyncio.sleep(0.05)
    cancelled = await stubs.tasks.CancelTask(
        ts.CancelTaskRequest(id=run.task.id, reason="user asked")
    )
    assert cancelled.task.state == S.TASK_STATE_CANCELLED
    # The worker is free again within a second: a new run on it completes.
    fake.state.configure("langflow", reset=True)
    second = await stubs.workflows.RunWorkflow(
        ws.RunWorkflowRequest(workflow_id=workflow_id, input_value="next")
    )
    third = await stubs.workflows.RunWorkflow(
        ws.RunWorkflowRequest(workflow_id=workflow_id, input_value="next")
    )
    assert (await wait_terminal(stubs, second.task.id, 20)).state == S.TASK_STATE_SUCCEEDED
    assert (await wait_terminal(stubs, third.task.id, 20)).state == S.TASK_STATE_SUCCEEDED
    final = (await stubs.tasks.GetTask(ts.GetTaskRequest(id=run.task.id))).task
    assert final.state == S.TASK_STATE_CANCELLED and final.error.message == "user asked"
    err = await expect_error(
        stubs.tasks.CancelTask(ts.CancelTaskRequest(id=run.task.id)),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert error_info(err).reason == "TASK_NOT_CANCELLABLE"


async def test_retry_task_runs_again_as_new_attempt(
    stubs: Stubs, fake: FakeSources, workers: WorkerProcess
) -> None:
    workflow_id = await echo_workflow(stubs, fake)
    fake.state.configure("langflow", require_api_key="needed")
    task = await wait_terminal(
        stubs,
        (
            await stubs.workflows.RunWorkflow(
                ws.RunWorkflowRequest(workflow_id=workflow_id, input_value="again")
            )
        ).task.id,
    )
    assert task.state == S.TASK_STATE_FAILED
    fake.state.configure("langflow", reset=True)
    retried = await stubs.tasks.RetryTask(ts.RetryTaskRequest(id=task.id))
    assert retried.task.state in (S.TASK_STATE_PENDING, S.TASK_STATE_QUEUED, S.TASK_STATE_RUNNING)
    done = await wait_terminal(stubs, task.id)
    assert (
        done.state == S.TASK_STATE_SUCCEEDED and done.attempt == 2 and done.output_text == "again"
    )
    await expect_error(
        stubs.tasks.RetryTask(ts.RetryTaskRequest(id=task.id)), grpc.StatusCode.FAILED_PRECONDITION
    )


async def test_request_id_returns_the_same_task(
    stubs: Stubs, fake: FakeSources, workers: WorkerProcess, pg: asyncpg.Connection
) -> None:
    workflow_id = await echo_workflow(stubs, fake)
    request = ws.RunWorkflowRequest(
        workflow_id=workflow_id, input_value="once", request_id="run-once-1"
    )
    first = await stubs.workflows.RunWorkflow(request)
    again = await stubs.workflows.RunWorkflow(request)
    assert again.task.id == first.task.id
    assert await pg.fetchval("SELECT count(*) FROM tasks") == 1
    other = ws.RunWorkflowRequest(
        workflow_id=workflow_id, input_value="different", request_id="run-once-1"
    )
    err = await expect_error(stubs.workflows.RunWorkflow(other), grpc.StatusCode.INVALID_ARGUMENT)
    assert "request_id" in field_violations(err)


async def test_200_tasks_at_once_all_complete(
    stubs: Stubs, fake: FakeSources, workers: WorkerProcess, pg: asyncpg.Connection
) -> None:
    workflow_id = await echo_workflow(stubs, fake)
    batch = ws.BatchRunWorkflowsRequest(
        requests=[
            ws.RunWorkflowRequest(workflow_id=workflow_id, input_value=f"n{i}") for i in range(100)
        ]
    )
    singles = [
        stubs.workflows.RunWorkflow(
            ws.RunWorkflowRequest(workflow_id=workflow_id, input_value=f"s{i}")
        )
        for i in range(100)
    ]
    batch_response, *single_responses = await asyncio.gather(
        stubs.workflows.BatchRunWorkflows(batch), *singles
    )
    ids = [t.id for t in batch_response.tasks] + [r.task.id for r in single_responses]
    assert len(set(ids)) == 200
    async with asyncio.timeout(120):
        while await pg.fetchval("SELECT count(*) FROM tasks WHERE state = 'SUCCEEDED'") < 200:
            await asyncio.sleep(0.2)
    rows = await pg.fetch("SELECT input_value, output_text, attempt FROM tasks")
    assert all(r["output_text"] == r["input_value"] and r["attempt"] == 1 for r in rows)


async def test_batch_is_all_or_nothing(
    stubs: Stubs, fake: FakeSources, pg: asyncpg.Connection
) -> None:
    workflow_id = await echo_workflow(stubs, fake)
    batch = ws.BatchRunWorkflowsRequest(
        requests=[
            ws.RunWorkflowRequest(workflow_id=workflow_id),
            ws.RunWorkflowRequest(workflow_id="bad"),
        ]
    )
    err = await expect_error(
        stubs.workflows.BatchRunWorkflows(batch), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert "requests[1].workflow_id" in field_violations(err)
    missing = ws.BatchRunWorkflowsRequest(
        requests=[
            ws.RunWorkflowRequest(workflow_id=workflow_id),
            ws.RunWorkflowRequest(workflow_id="00000000-0000-4000-8000-000000000000"),
        ]
    )
    await expect_error(stubs.workflows.BatchRunWorkflows(missing), grpc.StatusCode.NOT_FOUND)
    assert await pg.fetchval("SELECT count(*) FROM tasks") == 0
