"""Session fixtures: one real Postgres and Redis (embedded, unless SPARK_TEST_DATABASE_URL /
SPARK_TEST_REDIS_URL name servers), a fresh database migrated by Alembic, a real server
process on 127.0.0.1:0, the fake LangFlow / Agents / Hive server, and real gRPC channels.

Each test starts from empty tables (truncated before it runs) and can run alone.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import grpc
import pytest
import redis.asyncio as aioredis
from cryptography.fernet import Fernet

from spark_grpc.demo.fake_sources import KINDS, FakeSources, run_fake_sources
from spark_grpc.embedded import EmbeddedStack
from tests.support import (
    ServerProcess,
    Stubs,
    WorkerProcess,
    start_server_process,
    start_worker_process,
)

TABLES = ("schedules", "task_events", "tasks", "workflows", "sources", "idempotency_keys")


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStack | None]:
    if os.environ.get("SPARK_TEST_DATABASE_URL"):
        yield None
        return
    root = tmp_path_factory.mktemp("embedded")
    stack = EmbeddedStack(root)
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def database_url(stack: EmbeddedStack | None) -> str:
    """A fresh database, migrated to head, for this test session."""
    name = f"spark_test_{uuid.uuid4().hex[:8]}"
    if stack is None:
        base = os.environ["SPARK_TEST_DATABASE_URL"]
        admin = base.replace("postgresql+asyncpg://", "postgresql://")
        import asyncio

        async def create() -> None:
            conn = await asyncpg.connect(admin)
            try:
                await conn.execute(f'CREATE DATABASE "{name}"')
            finally:
                await conn.close()

        asyncio.run(create())
        url = base.rsplit("/", 1)[0] + f"/{name}"
    else:
        stack.postgres.create_database(name)
        url = stack.postgres.url.rsplit("/", 1)[0] + f"/{name}"
    # The real CLI, in its own process: Alembic's async env runs its own event loop.
    subprocess.run(
        [sys.executable, "-m", "spark_grpc", "migrate"],
        env={**os.environ, "SPARK_DATABASE_URL": url, "SPARK_LOG_FORMAT": "text"},
        check=True,
        capture_output=True,
    )
    return url


@pytest.fixture(scope="session")
def encryption_key() -> str:
    return Fernet.generate_key().decode()


@pytest.fixture(scope="session")
def redis_url(stack: EmbeddedStack | None) -> str:
    if stack is None:
        return os.environ["SPARK_TEST_REDIS_URL"]
    return stack.redis.url


@pytest.fixture(scope="session")
def server_env(database_url: str, redis_url: str, encryption_key: str) -> dict[str, str]:
    return {
        "SPARK_DATABASE_URL": database_url,
        "SPARK_REDIS_URL": redis_url,
        # Short lease and sweep period: a killed worker's task moves on within seconds.
        "SPARK_LEASE_S": "3",
        "SPARK_SWEEP_INTERVAL_S": "0.2",
        "SPARK_ENCRYPTION_KEYS": encryption_key,
        "SPARK_LOG_FORMAT": "json",
        # Loopback only; the auth tests start their own servers with keys required.
        "SPARK_AUTH_MODE": "open",
        "SPARK_REFLECTION_PUBLIC": "true",
        "SPARK_LOG_LEVEL": "INFO",
        "SPARK_DB_HEALTH_INTERVAL_S": "0.5",
        # Tests fire bursts of 50-200 calls on a loaded 2-core machine, where the default
        # 1 s admission wait refuses some; test_admission.py covers refusals itself.
        "SPARK_ADMISSION_WAIT_S": "30",
    }


@pytest.fixture(scope="session")
def server(
    server_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A real `spark-grpc serve` process on 127.0.0.1:0."""
    proc = start_server_process(server_env, tmp_path_factory.mktemp("server"))
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def workers(
    server_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """A real `spark-grpc worker --concurrency 2` (two RQ processes and the sweeper)."""
    proc = start_worker_process(server_env, tmp_path_factory.mktemp("workers"), concurrency=2)
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(scope="session")
async def channel(server: ServerProcess) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(server.address) as ch:
        yield ch


@pytest.fixture(scope="session")
def stubs(channel: grpc.aio.Channel) -> Stubs:
    return Stubs(channel)


@pytest.fixture(scope="session")
async def fake() -> AsyncIterator[FakeSources]:
    async with run_fake_sources() as fake:
        yield fake


@pytest.fixture
async def pg(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection, for asserting what is (not) stored."""
    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        yield conn
    finally:
        await conn.close()


async def reset_state(pg: asyncpg.Connection, fake: FakeSources) -> None:
    """Empty tables and fake sources that behave: what every e2e test starts from."""
    # Workers and sweepers of earlier tests may still be writing: TRUNCATE's exclusive
    # locks can then deadlock with them, and Postgres aborts one side; just try again.
    for attempt in range(5):
        try:
            await pg.execute(f"TRUNCATE {', '.join(TABLES)} CASCADE")
            break
        except asyncpg.DeadlockDetectedError:
            if attempt == 4:
                raise
            await asyncio.sleep(0.2)
    for kind in KINDS:
        fake.state.configure(kind, reset=True)
        fake.state.requests(kind).clear()


FAULT_REPORT: list[str] = []


@pytest.fixture(scope="session")
def fault_report() -> list[str]:
    """Fault tests add one line each: the fault and what was observed (counts, states).

    The lines are printed at the end of the run and written to
    .pytest_cache/fault-report.md, so every CI log carries the report.
    """
    return FAULT_REPORT


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not FAULT_REPORT:
        return
    terminalreporter.section("fault report")
    for line in FAULT_REPORT:
        terminalreporter.write_line(line)
    path = terminalreporter.config.rootpath / ".pytest_cache" / "fault-report.md"
    path.parent.mkdir(exist_ok=True)
    path.write_text("# Fault report\n\n" + "\n".join(f"- {line}" for line in FAULT_REPORT) + "\n")
