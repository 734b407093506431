"""Admission control (SPARK_MAX_CONCURRENT_RPCS): a flood of RunWorkflow beyond the limit
is refused with RESOURCE_EXHAUSTED and a RetryInfo delay; every call answered OK has its
task and a refused call wrote nothing; open streams and health checks take no slot."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from pathlib import Path

import asyncpg
import grpc
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from spark_grpc._gen.spark.v1 import task_service_pb2 as ts
from spark_grpc._gen.spark.v1 import workflow_service_pb2 as ws
from spark_grpc.demo.fake_sources import FakeSources
from tests.e2e.test_tasks import echo_workflow
from tests.support import Stubs, error_info, start_server_process, status_details

#: Below the 200 streams one connection may carry (SPARK_MAX_STREAMS_PER_CONNECTION).
FLOOD = 150


async def test_a_flood_is_refused_with_retry_info_and_nothing_is_lost(
    server_env: dict[str, str], tmp_path: Path, fake: FakeSources, pg: asyncpg.Connection
) -> None:
    env = {
        **server_env,
        "SPARK_MAX_CONCURRENT_RPCS": "2",
        "SPARK_ADMISSION_WAIT_S": "0.05",
        "SPARK_STREAM_HEARTBEAT_S": "0.2",
    }
    proc = start_server_process(env, tmp_path)
    try:
        async with (
            grpc.aio.insecure_channel(proc.address) as channel,
            grpc.aio.insecure_channel(proc.address) as health_channel,
        ):
            stubs = Stubs(channel)
            health = health_pb2_grpc.HealthStub(health_channel)
            workflow_id = await echo_workflow(stubs, fake)
            # More long-lived streams than the limit: they hold no slot.
            streams = [
                stubs.tasks.WatchTasks(
                    ts.WatchTasksRequest(filter=ts.TaskFilter(workflow_id=str(uuid.uuid4())))
                )
                for _ in range(3)
            ]
            for stream in streams:
                assert (await stream.read()).HasField("heartbeat")  # open and served
            await stubs.workflows.GetWorkflow(ws.GetWorkflowRequest(id=workflow_id), timeout=10)

            runs = [
                stubs.workflows.RunWorkflow(
                    ws.RunWorkflowRequest(workflow_id=workflow_id, input_value=f"flood {i}"),
                    timeout=60,
                )
                for i in range(FLOOD)
            ]
            checks = [health.Check(health_pb2.HealthCheckRequest(), timeout=60) for _ in range(20)]
            results = await asyncio.gather(*runs, *checks, return_exceptions=True)
            run_results, check_results = results[:FLOOD], results[FLOOD:]

            ok = [r for r in run_results if isinstance(r, ws.RunWorkflowResponse)]
            refused = [
                r
                for r in run_results
                if isinstance(r, grpc.aio.AioRpcError)
                and r.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            ]
            assert len(ok) + len(refused) == FLOOD, [
                r for r in run_results if r not in ok and r not in refused
            ]
            assert ok and refused
            for err in refused:
                assert error_info(err).reason == "SERVER_OVERLOADED"
                retry = error_details_pb2.RetryInfo()
                assert any(d.Unpack(retry) for d in status_details(err).details)
                assert retry.retry_delay.ToTimedelta() > dt.timedelta(0)
            assert [getattr(r, "status", r) for r in check_results] == [
                health_pb2.HealthCheckResponse.SERVING
            ] * len(check_results)

            rows = await pg.fetch("SELECT id::text FROM tasks WHERE input_value LIKE 'flood %'")
            assert {r["id"] for r in rows} == {r.task.id for r in ok}

            # The streams lived through the flood, and the server serves normally after it.
            for stream in streams:
                assert (await stream.read()).HasField("heartbeat")
                stream.cancel()
            await stubs.workflows.RunWorkflow(
                ws.RunWorkflowRequest(workflow_id=workflow_id, input_value="after"), timeout=10
            )
    finally:
        proc.stop()
    assert "overloaded:" in proc.log()  # one summary line, not a line per refusal
