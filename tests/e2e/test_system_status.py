"""SystemService.GetSystemStatus: the server, Postgres, Redis, workers and schedulers at a
glance; the scheduler's presence heartbeat; an answer even when Postgres and Redis are
down."""

from __future__ import annotations

import asyncio
import socket
import time
from datetime import timedelta
from pathlib import Path

import grpc
import pytest

from spark_grpc import __version__
from spark_grpc._gen.spark.v1 import (
    schedule_pb2,
    schedule_service_pb2,
    source_pb2,
    source_service_pb2,
    system_service_pb2,
    system_service_pb2_grpc,
    workflow_service_pb2,
)
from spark_grpc.demo.fake_sources import FakeSources
from tests.support import ServerProcess, Stubs, WorkerProcess, start_scheduler_process
from tests.support import start_server_process as start_server

ECHO_FLOW_ID = "8f14e45f-ceea-467f-a5b8-1c2d3e4f5a01"


async def status(channel: grpc.aio.Channel) -> system_service_pb2.GetSystemStatusResponse:
    stub = system_service_pb2_grpc.SystemServiceStub(channel)
    return await stub.GetSystemStatus(system_service_pb2.GetSystemStatusRequest(), timeout=10)


async def hourly_schedule(stubs: Stubs, fake: FakeSources) -> schedule_pb2.Schedule:
    source = await stubs.sources.CreateSource(
        source_service_pb2.CreateSourceRequest(
            source=source_pb2.Source(
                display_name="status",
                type=source_pb2.SOURCE_TYPE_LANGFLOW,
                url=fake.url("langflow"),
            )
        )
    )
    workflow = await stubs.workflows.ImportWorkflow(
        workflow_service_pb2.ImportWorkflowRequest(
            source_id=source.source.id, remote_flow_id=ECHO_FLOW_ID
        )
    )
    spec = schedule_pb2.ScheduleSpec(interval=schedule_pb2.IntervalSpec())
    spec.interval.interval.FromTimedelta(timedelta(hours=1))
    created = await stubs.schedules.CreateSchedule(
        schedule_service_pb2.CreateScheduleRequest(
            schedule=schedule_pb2.Schedule(workflow_id=workflow.workflow.id, spec=spec)
        )
    )
    return created.schedule


async def test_status_shows_every_component_and_a_live_scheduler(
    server: ServerProcess,
    workers: WorkerProcess,
    channel: grpc.aio.Channel,
    stubs: Stubs,
    fake: FakeSources,
    server_env: dict[str, str],
    tmp_path: Path,
) -> None:
    schedule = await hourly_schedule(stubs, fake)
    scheduler = start_scheduler_process(server_env, tmp_path)
    try:
        # The first heartbeat may come before the first tick: wait for a tick.
        deadline = time.monotonic() + 15
        while True:
            reply = await status(channel)
            mine = [s for s in reply.schedulers.schedulers if s.pid == scheduler.process.pid]
            if mine and mine[0].HasField("last_tick_time"):
                break
            assert time.monotonic() < deadline, reply
            await asyncio.sleep(0.5)
        assert mine[0].name == f"{socket.gethostname()}.{scheduler.process.pid}"
        assert mine[0].heartbeat_age.ToTimedelta() < timedelta(seconds=15)
        assert mine[0].last_tick_error == ""
        assert reply.server.version == __version__ and reply.server.replica
        assert reply.server.uptime.ToTimedelta() > timedelta(0)
        db = reply.database
        assert db.reachable and db.error == "", db
        assert timedelta(0) < db.latency.ToTimedelta() < timedelta(seconds=2)
        assert db.schema_revision and db.schema_revision == db.schema_head_revision, db
        assert reply.redis.reachable and reply.redis.version and reply.redis.error == ""
        assert reply.redis.latency.ToTimedelta() > timedelta(0)
        assert reply.workers.live_count >= 2, reply.workers  # the fixture runs two
        assert reply.schedulers.active_schedule_count == 1
        assert reply.schedulers.next_fire_time == schedule.next_fire_time

        await stubs.schedules.PauseSchedule(
            schedule_service_pb2.PauseScheduleRequest(id=schedule.id)
        )
        paused = await status(channel)
        assert paused.schedulers.active_schedule_count == 0
        assert not paused.schedulers.HasField("next_fire_time")
    finally:
        scheduler.stop()
    # A scheduler that stops cleanly drops out at once (a killed one after 15 s).
    gone = await status(channel)
    assert scheduler.process.pid not in [s.pid for s in gone.schedulers.schedulers]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def server_without_backends(
    server_env: dict[str, str], tmp_path: Path
) -> tuple[ServerProcess, dict[str, str]]:
    env = {
        **server_env,
        "SPARK_DATABASE_URL": f"postgresql+asyncpg://spark:spark@127.0.0.1:{closed_port()}/spark",
        "SPARK_REDIS_URL": f"redis://127.0.0.1:{closed_port()}/0",
    }
    return start_server(env, tmp_path), env


async def test_status_answers_while_postgres_and_redis_are_down(
    server_without_backends: tuple[ServerProcess, dict[str, str]],
) -> None:
    proc, _ = server_without_backends
    try:
        async with grpc.aio.insecure_channel(proc.address) as channel:
            started = time.monotonic()
            reply = await status(channel)
            assert time.monotonic() - started < 5
    finally:
        proc.stop()
    assert not reply.database.reachable and reply.database.error, reply.database
    assert not reply.database.HasField("latency")
    assert reply.database.schema_revision == "" and reply.database.schema_head_revision
    assert not reply.redis.reachable and reply.redis.error, reply.redis
    assert reply.workers.live_count == 0 and not reply.schedulers.schedulers
    assert reply.server.version == __version__
