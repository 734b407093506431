"""OpenTelemetry: a caller's trace goes through the server, the task row and the worker
into the source call."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import grpc

from spark_grpc._gen.spark.v1 import workflow_service_pb2 as ws
from spark_grpc.demo.fake_sources import FakeSources
from tests.e2e.test_tasks import echo_workflow, wait_terminal
from tests.support import Stubs, start_server_process, start_worker_process


async def test_trace_context_reaches_the_source(
    server_env: dict[str, str], tmp_path: Path, fake: FakeSources
) -> None:
    env = {**server_env, "SPARK_TRACING": "console"}
    server = start_server_process(env, tmp_path / "server")
    workers = None
    trace_id = secrets.token_hex(16)
    try:
        # The session's workers (untraced) may take a run too: run until the traced one has.
        workers = start_worker_process(env, tmp_path / "workers", concurrency=1)
        async with grpc.aio.insecure_channel(server.address) as channel:
            stubs = Stubs(channel)
            workflow_id = await echo_workflow(stubs, fake)
            metadata = (("traceparent", f"00-{trace_id}-{secrets.token_hex(8)}-01"),)
            for _ in range(20):
                fake.state.requests("langflow").clear()
                run = await stubs.workflows.RunWorkflow(
                    ws.RunWorkflowRequest(workflow_id=workflow_id, input_value="traced"),
                    metadata=metadata,
                )
                done = await wait_terminal(stubs, run.task.id)
                if done.worker_name.split(".")[1] == str(workers.process.pid):
                    break
            runs = [r for r in fake.state.requests("langflow") if "/run/" in r["path"]]
            assert runs, "the source was called"
            traceparent = runs[-1]["headers"].get("traceparent", "")
            assert traceparent.split("-")[1] == trace_id, traceparent
        await asyncio.sleep(0.5)  # the console exporter flushes every 200 ms
        assert trace_id in server.log(), "the server's RPC span joined the caller's trace"
    finally:
        if workers is not None:
            workers.stop()
        server.stop()
