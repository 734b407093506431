"""The server as a whole: reflection, health, the error boundary, shutdown, Postgres loss."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import asyncpg
import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from spark_grpc._gen.spark.v1 import (
    source_pb2,
    workflow_pb2,
)
from spark_grpc._gen.spark.v1 import (
    source_service_pb2 as ss,
)
from spark_grpc._gen.spark.v1 import (
    workflow_service_pb2 as ws,
)
from spark_grpc.demo.fake_sources import FakeSources
from spark_grpc.embedded import EmbeddedStack
from tests.e2e.test_sources_api import create_source
from tests.support import (
    Stubs,
    expect_error,
    field_violations,
    start_server_process,
)

SERVICES = ("spark.v1.SourceService", "spark.v1.WorkflowService", "spark.v1.TaskService")
UUID0 = "00000000-0000-4000-8000-000000000000"


async def test_reflection_lists_every_service(channel: grpc.aio.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)

    async def ask(
        request: reflection_pb2.ServerReflectionRequest,
    ) -> reflection_pb2.ServerReflectionResponse:
        async for response in stub.ServerReflectionInfo(iter([request])):
            return response
        raise AssertionError("no answer")

    listed = await ask(reflection_pb2.ServerReflectionRequest(list_services=""))
    names = {s.name for s in listed.list_services_response.service}
    assert {*SERVICES, "grpc.health.v1.Health"} <= names
    files = await ask(
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="spark.v1.SourceService")
    )
    protos = [
        descriptor_pb2.FileDescriptorProto.FromString(b)
        for b in files.file_descriptor_response.file_descriptor_proto
    ]
    assert any(p.name == "spark/v1/source_service.proto" for p in protos)


async def test_health_serving_per_service(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", *SERVICES):
        response = await health.Check(health_pb2.HealthCheckRequest(service=name))
        assert response.status == health_pb2.HealthCheckResponse.SERVING


ALL_METHODS = [
    "/spark.v1.SourceService/CreateSource",
    "/spark.v1.SourceService/GetSource",
    "/spark.v1.SourceService/ListSources",
    "/spark.v1.SourceService/UpdateSource",
    "/spark.v1.SourceService/DeleteSource",
    "/spark.v1.SourceService/CheckSource",
    "/spark.v1.SourceService/ListRemoteFlows",
    "/spark.v1.SourceService/GetRemoteFlow",
    "/spark.v1.WorkflowService/ImportWorkflow",
    "/spark.v1.WorkflowService/CreateWorkflow",
    "/spark.v1.WorkflowService/GetWorkflow",
    "/spark.v1.WorkflowService/ListWorkflows",
    "/spark.v1.WorkflowService/UpdateWorkflow",
    "/spark.v1.WorkflowService/DeleteWorkflow",
]


@pytest.mark.parametrize("method", ALL_METHODS)
@pytest.mark.parametrize("payload", [b"\xff\xff\xff\xff", b"\x0a\xff\x01", b"\x08" + b"\xff" * 11])
async def test_bytes_that_are_not_a_message_are_invalid_argument(
    channel: grpc.aio.Channel, pg: asyncpg.Connection, method: str, payload: bytes
) -> None:
    call = channel.unary_unary(method)  # no serializers: raw bytes on the wire
    err = await expect_error(call(payload), grpc.StatusCode.INVALID_ARGUMENT)
    assert "not a valid" in (err.details() or "")
    assert await pg.fetchval("SELECT count(*) FROM sources") == 0


LONG = "x" * 5000
BAD_REQUESTS = [
    (
        "sources.CreateSource",
        ss.CreateSourceRequest(),
        {"source.display_name", "source.type", "source.url"},
    ),
    (
        "sources.CreateSource",
        ss.CreateSourceRequest(source=source_pb2.Source(display_name=LONG, type=1, url="http://a")),
        {"source.display_name"},
    ),
    (
        "sources.CreateSource",
        ss.CreateSourceRequest(source=source_pb2.Source(display_name="a", type=42, url="http://a")),
        {"source.type"},
    ),
    (
        "sources.CreateSource",
        ss.CreateSourceRequest(
            source=source_pb2.Source(display_name="a", type=1, url="file:///etc/passwd")
        ),
        {"source.url"},
    ),
    (
        "sources.CreateSource",
        ss.CreateSourceRequest(
            source=source_pb2.Source(display_name="a", type=1, url="javascript:alert(1)")
        ),
        {"source.url"},
    ),
    (
        "sources.CreateSource",
        ss.CreateSourceRequest(
            source=source_pb2.Source(display_name="a", type=1, url="http://u:p@host")
        ),
        {"source.url"},
    ),
    (
        "sources.CreateSource",
        ss.CreateSourceRequest(
            source=source_pb2.Source(display_name="a\x00b", type=1, url="http://a")
        ),
        {"source.display_name"},
    ),
    (
        "sources.CreateSource",
        ss.CreateSourceRequest(
            source=source_pb2.Source(display_name="a", type=1, url="http://a"), request_id=LONG
        ),
        {"request_id"},
    ),
    ("sources.GetSource", ss.GetSourceRequest(id="not-a-uuid"), {"id"}),
    ("sources.GetSource", ss.GetSourceRequest(), {"id"}),
    ("sources.ListSources", ss.ListSourcesRequest(page_size=-5), {"page_size"}),
    ("sources.ListSources", ss.ListSourcesRequest(type=99), {"type"}),
    (
        "sources.UpdateSource",
        ss.UpdateSourceRequest(source=source_pb2.Source(id="x", url="ftp://a")),
        {"source.id", "source.url"},
    ),
    ("sources.DeleteSource", ss.DeleteSourceRequest(id=LONG), {"id"}),
    ("sources.CheckSource", ss.CheckSourceRequest(id="'; DROP TABLE sources; --"), {"id"}),
    (
        "sources.ListRemoteFlows",
        ss.ListRemoteFlowsRequest(source_id=UUID0, page_size=-1, kind=77),
        {"page_size", "kind"},
    ),
    (
        "sources.GetRemoteFlow",
        ss.GetRemoteFlowRequest(source_id="", remote_flow_id=LONG),
        {"source_id", "remote_flow_id"},
    ),
    (
        "workflows.ImportWorkflow",
        ws.ImportWorkflowRequest(source_id="bad", remote_flow_id=""),
        {"source_id", "remote_flow_id"},
    ),
    (
        "workflows.ImportWorkflow",
        ws.ImportWorkflowRequest(source_id=UUID0, remote_flow_id="f", tags=[""]),
        {"tags[0]"},
    ),
    (
        "workflows.CreateWorkflow",
        ws.CreateWorkflowRequest(),
        {"workflow.display_name", "workflow.source_id", "workflow.remote_flow_id"},
    ),
    (
        "workflows.CreateWorkflow",
        ws.CreateWorkflowRequest(
            workflow=workflow_pb2.Workflow(
                display_name="a", source_id=UUID0, remote_flow_id="f", description=LONG
            )
        ),
        {"workflow.description"},
    ),
    ("workflows.GetWorkflow", ws.GetWorkflowRequest(id="123", view=9), {"id", "view"}),
    (
        "workflows.ListWorkflows",
        ws.ListWorkflowsRequest(page_size=-1, source_id="zz", name_contains=LONG),
        {"page_size", "source_id", "name_contains"},
    ),
    (
        "workflows.UpdateWorkflow",
        ws.UpdateWorkflowRequest(workflow=workflow_pb2.Workflow(id="nope")),
        {"workflow.id"},
    ),
    ("workflows.DeleteWorkflow", ws.DeleteWorkflowRequest(id=""), {"id"}),
]


@pytest.mark.parametrize(
    ("method", "request_", "fields"),
    BAD_REQUESTS,
    ids=[f"{m}-{i}" for i, (m, _, _) in enumerate(BAD_REQUESTS)],
)
async def test_bad_input_is_invalid_argument_with_field_violations(
    stubs: Stubs, pg: asyncpg.Connection, method: str, request_: object, fields: set[str]
) -> None:
    service, rpc = method.split(".")
    err = await expect_error(
        getattr(getattr(stubs, service), rpc)(request_), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert fields <= set(field_violations(err)), field_violations(err)
    assert (
        await pg.fetchval(
            "SELECT (SELECT count(*) FROM sources) + (SELECT count(*) FROM workflows)"
        )
        == 0
    )


def test_missing_encryption_key_is_a_clear_startup_error(database_url: str, redis_url: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "spark_grpc", "serve"],
        env={
            **os.environ,
            "SPARK_DATABASE_URL": database_url,
            "SPARK_REDIS_URL": redis_url,
            "SPARK_ENCRYPTION_KEYS": "",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "SPARK_ENCRYPTION_KEYS is not set" in result.stderr


async def test_sigterm_finishes_in_flight_rpcs_then_exits_0(
    server_env: dict[str, str], tmp_path: Path, fake: FakeSources, stubs: Stubs
) -> None:
    own = start_server_process(server_env, tmp_path)
    try:
        async with grpc.aio.insecure_channel(own.address) as channel:
            own_stubs = Stubs(channel)
            source = await create_source(own_stubs, fake.url("langflow"))
            fake.state.configure("langflow", delay_s=1.5)
            health = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(service="spark.v1.SourceService")
            )
            assert (await health.read()).status == health_pb2.HealthCheckResponse.SERVING
            in_flight = asyncio.ensure_future(
                own_stubs.sources.CheckSource(ss.CheckSourceRequest(id=source.id))
            )
            await asyncio.sleep(0.5)
            own.process.send_signal(signal.SIGTERM)
            assert (await health.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
            checked = await in_flight
            assert checked.source.health.reachable
        assert await asyncio.to_thread(own.process.wait, 30) == 0
    finally:
        own.stop()


async def test_postgres_down_is_unavailable_and_not_serving_then_recovers(
    stack: EmbeddedStack | None, stubs: Stubs, channel: grpc.aio.Channel
) -> None:
    if stack is None:
        pytest.skip("needs the embedded Postgres to stop and start it")
    health = health_pb2_grpc.HealthStub(channel)
    stack.postgres.stop(kill=True)
    try:
        err = await expect_error(
            stubs.sources.ListSources(ss.ListSourcesRequest(), timeout=15),
            grpc.StatusCode.UNAVAILABLE,
        )
        assert "database" in (err.details() or "")
        for _ in range(100):
            status = (
                await health.Check(health_pb2.HealthCheckRequest(service="spark.v1.SourceService"))
            ).status
            if status == health_pb2.HealthCheckResponse.NOT_SERVING:
                break
            await asyncio.sleep(0.1)
        assert status == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        await asyncio.to_thread(stack.postgres.start)
    for _ in range(100):
        status = (
            await health.Check(health_pb2.HealthCheckRequest(service="spark.v1.SourceService"))
        ).status
        if status == health_pb2.HealthCheckResponse.SERVING:
            break
        await asyncio.sleep(0.1)
    assert status == health_pb2.HealthCheckResponse.SERVING
    await stubs.sources.ListSources(ss.ListSourcesRequest(), timeout=15)
