"""Concurrent RunWorkflow calls share transactions (group commit); each caller still gets
its own task or its own error, and nothing else is written."""

from __future__ import annotations

import asyncio
import uuid

import grpc

from spark_grpc._gen.spark.v1 import task_pb2
from spark_grpc._gen.spark.v1 import task_service_pb2 as ts
from spark_grpc._gen.spark.v1 import workflow_service_pb2 as ws
from spark_grpc.demo.fake_sources import FakeSources
from tests.e2e.test_task_faults import echo_workflow
from tests.support import Stubs, error_info


async def test_concurrent_runs_each_get_their_own_answer(stubs: Stubs, fake: FakeSources) -> None:
    workflow_id = await echo_workflow(stubs, fake)
    unknown = str(uuid.uuid4())
    reused = f"req-{uuid.uuid4()}"
    requests = [
        ws.RunWorkflowRequest(workflow_id=workflow_id, input_value=f"ok {i}") for i in range(40)
    ]
    requests += [
        ws.RunWorkflowRequest(workflow_id=unknown, input_value=f"lost {i}") for i in range(5)
    ]
    # The same request_id twice with the same body: one task; with another body: refused.
    requests += [
        ws.RunWorkflowRequest(workflow_id=workflow_id, input_value="same", request_id=reused)
    ] * 2
    requests.append(
        ws.RunWorkflowRequest(workflow_id=workflow_id, input_value="other", request_id=reused)
    )
    before = (await stubs.tasks.ListTasks(ts.ListTasksRequest(page_size=1000))).tasks

    async def run(request: ws.RunWorkflowRequest) -> task_pb2.Task | grpc.aio.AioRpcError:
        try:
            return (await stubs.workflows.RunWorkflow(request)).task
        except grpc.aio.AioRpcError as err:
            return err

    answers = await asyncio.gather(*(run(r) for r in requests))
    ok = answers[:40]
    assert all(isinstance(a, task_pb2.Task) for a in ok), [
        a for a in ok if not isinstance(a, task_pb2.Task)
    ][:1]
    assert [a.input_value for a in ok] == [f"ok {i}" for i in range(40)]  # type: ignore[union-attr]
    assert len({a.id for a in ok}) == 40  # type: ignore[union-attr]
    for err in answers[40:45]:
        assert isinstance(err, grpc.aio.AioRpcError)
        assert err.code() == grpc.StatusCode.NOT_FOUND
        assert error_info(err).reason == "WORKFLOW_NOT_FOUND"
    # One request_id, three calls, two bodies: whichever body came first wrote the only
    # task (its repeat gets that task); the other body is refused.
    reuse = answers[45:48]
    tasks = [a for a in reuse if isinstance(a, task_pb2.Task)]
    refused = [a for a in reuse if isinstance(a, grpc.aio.AioRpcError)]
    assert tasks and len({t.id for t in tasks}) == 1 and len({t.input_value for t in tasks}) == 1
    assert len(tasks) == (2 if tasks[0].input_value == "same" else 1)
    assert len(tasks) + len(refused) == 3
    for err in refused:
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_info(err).reason == "REQUEST_ID_REUSED"
    after = (await stubs.tasks.ListTasks(ts.ListTasksRequest(page_size=1000))).tasks
    assert len(after) - len(before) == 41, "40 runs and one task for the repeated request_id"
