"""WorkerService.ListWorkers: live workers with their state; dead ones drop out."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import grpc

from spark_grpc._gen.spark.v1 import worker_service_pb2, worker_service_pb2_grpc
from spark_grpc._gen.spark.v1 import workflow_service_pb2 as ws
from spark_grpc.demo.fake_sources import FakeSources
from tests.e2e.test_tasks import echo_workflow
from tests.support import Stubs, start_worker_process


async def test_list_workers_shows_busy_and_idle_and_drops_the_dead(
    channel: grpc.aio.Channel,
    stubs: Stubs,
    fake: FakeSources,
    server_env: dict[str, str],
    tmp_path: Path,
) -> None:
    view = worker_service_pb2_grpc.WorkerServiceStub(channel)
    own = start_worker_process(server_env, tmp_path, concurrency=1)
    try:
        (child,) = own.children()

        async def mine() -> list[worker_service_pb2.Worker]:
            listed = (await view.ListWorkers(worker_service_pb2.ListWorkersRequest())).workers
            return [w for w in listed if w.pid == child.pid]

        async with asyncio.timeout(20):
            while not await mine():
                await asyncio.sleep(0.2)
        (worker,) = await mine()
        assert worker.host and worker.queues == ["spark-tasks"] and worker.start_time.seconds
        assert worker.heartbeat_age.ToTimedelta().total_seconds() < 15

        workflow_id = await echo_workflow(stubs, fake)
        fake.state.configure("langflow", hang=True)
        runs = [
            (
                await stubs.workflows.RunWorkflow(ws.RunWorkflowRequest(workflow_id=workflow_id))
            ).task.id
            for _ in range(4)  # enough to reach this worker too, whoever else listens
        ]
        async with asyncio.timeout(30):
            while not (await mine())[0].current_task_id:
                await asyncio.sleep(0.2)
        (busy,) = await mine()
        assert busy.state == worker_service_pb2.WORKER_STATE_BUSY and busy.current_task_id in runs

        child.kill()  # kill -9: no goodbye; its presence expires
        async with asyncio.timeout(30):
            while await mine():
                await asyncio.sleep(0.5)
    finally:
        from spark_grpc._gen.spark.v1 import task_service_pb2 as ts

        fake.state.configure("langflow", reset=True)
        for task_id in locals().get("runs", []):
            with contextlib.suppress(grpc.aio.AioRpcError):
                await stubs.tasks.CancelTask(ts.CancelTaskRequest(id=task_id))
        own.stop()
