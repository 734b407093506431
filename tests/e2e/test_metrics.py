"""Prometheus metrics: RPC counters that move, task and queue figures."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import grpc
import httpx
from prometheus_client.parser import text_string_to_metric_families

from spark_grpc._gen.spark.v1 import source_service_pb2 as ss
from spark_grpc._gen.spark.v1 import workflow_service_pb2 as ws
from spark_grpc.demo.fake_sources import FakeSources
from tests.e2e.test_tasks import echo_workflow, wait_terminal
from tests.support import Stubs, WorkerProcess, start_server_process


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus exposition (0 when absent)."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


async def test_metrics_count_rpcs_and_tasks(
    server_env: dict[str, str], tmp_path: Path, fake: FakeSources, workers: WorkerProcess
) -> None:
    address = f"127.0.0.1:{free_port()}"
    proc = start_server_process({**server_env, "SPARK_METRICS_ADDRESS": address}, tmp_path)
    try:
        async with grpc.aio.insecure_channel(proc.address) as channel, httpx.AsyncClient() as http:
            stubs = Stubs(channel)
            method = "/spark.v1.SourceService/ListSources"
            before = sample(
                (await http.get(f"http://{address}/metrics")).text,
                "spark_rpc_requests_total",
                method=method,
                code="OK",
            )
            for _ in range(3):
                await stubs.sources.ListSources(ss.ListSourcesRequest())
            workflow_id = await echo_workflow(stubs, fake)
            run = await stubs.workflows.RunWorkflow(
                ws.RunWorkflowRequest(workflow_id=workflow_id, input_value="m")
            )
            await wait_terminal(stubs, run.task.id)
            text = (await http.get(f"http://{address}/metrics")).text
            assert sample(text, "spark_rpc_requests_total", method=method, code="OK") == before + 3
            assert "spark_rpc_duration_seconds_bucket" in text
            async with asyncio.timeout(30):
                while sample(text, "spark_tasks", state="SUCCEEDED") < 1:
                    await asyncio.sleep(0.5)
                    text = (await http.get(f"http://{address}/metrics")).text
            assert "spark_queue_depth" in text and "spark_open_streams" in text
            assert sample(text, "spark_task_duration_seconds_count") >= 1
    finally:
        proc.stop()
