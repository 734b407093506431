"""The embedded Postgres and Redis: real processes, real clients, real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import psutil
import pytest
import redis.asyncio as aioredis

from spark_grpc.embedded import (
    EmbeddedError,
    EmbeddedPaths,
    EmbeddedPostgres,
    EmbeddedRedis,
    EmbeddedStack,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[EmbeddedStack]:
    stack = EmbeddedStack(tmp_path / "embedded")
    try:
        yield stack
    finally:
        stack.stop(kill=True)


async def write_row(pg: EmbeddedPostgres, value: str) -> None:
    conn = await asyncpg.connect(pg.dsn())
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS notes (body text NOT NULL)")
        await conn.execute("INSERT INTO notes VALUES ($1)", value)
    finally:
        await conn.close()


async def read_rows(pg: EmbeddedPostgres) -> list[str]:
    conn = await asyncpg.connect(pg.dsn())
    try:
        return [r["body"] for r in await conn.fetch("SELECT body FROM notes ORDER BY body")]
    finally:
        await conn.close()


async def redis_set(r: EmbeddedRedis, key: str, value: str) -> None:
    async with aioredis.from_url(r.url) as client:
        await client.set(key, value)


async def redis_get(r: EmbeddedRedis, key: str) -> bytes | None:
    async with aioredis.from_url(r.url) as client:
        value: bytes | None = await client.get(key)
        return value


def server_pid(server: EmbeddedPostgres | EmbeddedRedis) -> int:
    proc = server._find_server()
    assert proc is not None
    return int(proc.pid)


@pytest.mark.asyncio
async def test_data_survives_graceful_restart_on_the_same_port(stack: EmbeddedStack) -> None:
    stack.start()
    pg_port, redis_port = stack.postgres.port, stack.redis.port
    # Outside the ephemeral range: no outgoing connection can take them while we are down.
    ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert pg_port < ephemeral_low
    assert redis_port < ephemeral_low
    assert stack.postgres.url == f"postgresql+asyncpg://postgres@127.0.0.1:{pg_port}/spark"
    assert stack.redis.url == f"redis://127.0.0.1:{redis_port}/0"
    await write_row(stack.postgres, "before restart")
    await redis_set(stack.redis, "job", "queued")

    stack.stop()
    assert not stack.postgres.is_running()
    assert not stack.redis.is_running()
    stack.stop()  # idempotent

    # A new object on the same root finds the port recorded by the first start.
    again = EmbeddedStack(stack.paths.root)
    with again:
        assert (again.postgres.port, again.redis.port) == (pg_port, redis_port)
        assert await read_rows(again.postgres) == ["before restart"]
        assert await redis_get(again.redis, "job") == b"queued"
    assert not again.postgres.is_running()


@pytest.mark.asyncio
async def test_sigkill_then_restart_keeps_committed_data(stack: EmbeddedStack) -> None:
    stack.start()
    await write_row(stack.postgres, "committed")
    # Redis has write(2)n the AOF before it replies: a killed process loses nothing.
    await redis_set(stack.redis, "job", "queued")
    pg_pid = server_pid(stack.postgres)
    backends = psutil.Process(pg_pid).children(recursive=True)
    assert backends

    stack.postgres.stop(kill=True)
    stack.redis.stop(kill=True)
    assert not stack.postgres.is_running()
    assert not stack.redis.is_running()
    # The whole process group went, not only the postmaster.
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in backends)
    assert (stack.postgres.pgdata / "postmaster.pid").exists()  # left behind, like a crash

    stack.start()
    assert server_pid(stack.postgres) != pg_pid
    assert await read_rows(stack.postgres) == ["committed"]
    assert await redis_get(stack.redis, "job") == b"queued"
    assert "database system was interrupted" in stack.postgres.log_path.read_text()


def test_second_owner_of_a_running_data_dir_is_refused(stack: EmbeddedStack) -> None:
    stack.start()
    pg_pid = server_pid(stack.postgres)

    other_pg = EmbeddedPostgres(stack.paths.postgres)
    other_redis = EmbeddedRedis(stack.paths.redis)
    with pytest.raises(EmbeddedError, match="already running"):
        other_pg.start(timeout=5)
    with pytest.raises(EmbeddedError, match="already running"):
        other_redis.start(timeout=5)

    # The refused objects can still tell where the server is, and leave it alone.
    assert other_pg.url == stack.postgres.url
    assert other_redis.url == stack.redis.url
    assert other_pg.is_running()
    other_pg.stop()  # not ours: nothing happens
    assert server_pid(stack.postgres) == pg_pid


def test_start_is_idempotent_and_a_busy_recorded_port_is_reported(tmp_path: Path) -> None:
    pg = EmbeddedPostgres(tmp_path / "pg")
    pg.start()
    try:
        pid = server_pid(pg)
        pg.start()
        assert server_pid(pg) == pid
    finally:
        pg.stop()

    # Another program took the port while we were down: say so rather than pick a new port
    # that clients configured with the old URL would never find.
    with subprocess.Popen(
        [sys.executable, "-c", _LISTEN, str(pg.port)], stdout=subprocess.PIPE
    ) as squatter:
        assert squatter.stdout is not None
        squatter.stdout.readline()
        try:
            with pytest.raises(EmbeddedError, match="taken by another program"):
                pg.start()
        finally:
            squatter.kill()
    assert not pg.is_running()


_LISTEN = """
import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen()
print("listening", flush=True); time.sleep(60)
"""


@pytest.mark.asyncio
async def test_restart_after_only_the_postmaster_was_sigkilled(tmp_path: Path) -> None:
    pg = EmbeddedPostgres(tmp_path / "pg")
    pg.start()
    try:
        await write_row(pg, "kept")
        conn = await asyncpg.connect(pg.dsn())  # a backend that outlives its postmaster
        backends = psutil.Process(server_pid(pg)).children()
        os.kill(server_pid(pg), signal.SIGKILL)  # a crash, not through stop()
        deadline = time.monotonic() + 5
        while pg.is_running():
            assert time.monotonic() < deadline
            time.sleep(0.01)

        pg.start()
        assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in backends)
        conn.terminate()
        assert await read_rows(pg) == ["kept"]
    finally:
        pg.stop()


def test_an_interrupted_first_initdb_is_redone(tmp_path: Path) -> None:
    pg = EmbeddedPostgres(tmp_path / "pg")
    pg.pgdata.mkdir(parents=True)
    (pg.pgdata / "PG_VERSION").write_text("18\n")  # what a killed initdb leaves behind
    (pg.data_dir / "initdb.begun").touch()
    pg.start()
    try:
        assert pg.is_running()
    finally:
        pg.stop()

    stranger = EmbeddedPostgres(tmp_path / "other")
    stranger.pgdata.mkdir(parents=True)
    (stranger.pgdata / "notes.txt").write_text("not a database")
    with pytest.raises(EmbeddedError, match="not a Postgres cluster"):
        stranger.start()
    assert (stranger.pgdata / "notes.txt").exists()


def test_stale_pid_files_do_not_block_a_start(tmp_path: Path) -> None:
    pg = EmbeddedPostgres(tmp_path / "pg")
    r = EmbeddedRedis(tmp_path / "redis")
    pg.start()
    r.start()
    pg.stop(kill=True)
    r.stop(kill=True)
    # The recorded pids now belong to a live process that is not the server (ours), which
    # Postgres on its own would take for another postmaster.
    pid_file = pg.pgdata / "postmaster.pid"
    lines = pid_file.read_text().splitlines()
    pid_file.write_text("\n".join([str(os.getpid()), *lines[1:]]) + "\n")
    (r.data_dir / "redis.pid").write_text(f"{os.getpid()}\n")
    assert not pg.is_running()
    assert not r.is_running()

    try:
        pg.start()
        r.start()
        assert pg.is_running()
        assert r.is_running()
    finally:
        pg.stop()
        r.stop()


_OWNER = """
import json, sys
from pathlib import Path
from spark_grpc import embedded

if sys.argv[2] == "no-pdeathsig":
    # What a platform without PR_SET_PDEATHSIG does: the servers outlive a killed parent.
    embedded.sys = type("sys", (), {"platform": "darwin"})
stack = embedded.EmbeddedStack(Path(sys.argv[1]))
stack.start()
pids = [stack.postgres._find_server().pid, stack.redis._find_server().pid]
print(json.dumps(pids), flush=True)
import time; time.sleep(120)
"""


def start_owner_and_sigkill_it(root: Path, mode: str) -> list[psutil.Process]:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    with subprocess.Popen(
        [sys.executable, "-c", _OWNER, str(root), mode], stdout=subprocess.PIPE, env=env
    ) as owner:
        assert owner.stdout is not None
        pids = json.loads(owner.stdout.readline())
        owner.kill()
    return [psutil.Process(pid) for pid in pids]


@pytest.mark.asyncio
async def test_servers_stop_when_their_parent_is_sigkilled(tmp_path: Path) -> None:
    servers = start_owner_and_sigkill_it(tmp_path / "embedded", "pdeathsig")
    deadline = time.monotonic() + 10
    while any(s.is_running() and s.status() != psutil.STATUS_ZOMBIE for s in servers):
        assert time.monotonic() < deadline, "servers outlived their parent"
        time.sleep(0.05)

    with EmbeddedStack(tmp_path / "embedded") as stack:
        await write_row(stack.postgres, "after orphaning")
        assert await read_rows(stack.postgres) == ["after orphaning"]


@pytest.mark.asyncio
async def test_leftover_servers_of_a_dead_parent_are_replaced(tmp_path: Path) -> None:
    root = tmp_path / "embedded"
    leftovers = start_owner_and_sigkill_it(root, "no-pdeathsig")
    assert all(s.is_running() for s in leftovers)
    ports = [json.loads((root / n / "port").read_text()) for n in ("postgres", "redis")]

    with EmbeddedStack(root) as stack:
        # Stopped, then started fresh as our own children, on the recorded ports.
        assert not any(s.is_running() and s.status() != psutil.STATUS_ZOMBIE for s in leftovers)
        assert [stack.postgres.port, stack.redis.port] == ports
        assert server_pid(stack.postgres) not in {s.pid for s in leftovers}
        await write_row(stack.postgres, "fresh")
        assert await read_rows(stack.postgres) == ["fresh"]


def test_runs_under_private_root_owned_parents(tmp_path: Path) -> None:
    # mkdtemp makes a 0700 directory: as root, Postgres runs as `pgserver`, who must be able
    # to reach the data dir through it.
    parent = Path(tempfile.mkdtemp(prefix="spark-embedded-"))
    try:
        deep = parent / "a" / "b"
        deep.mkdir(parents=True, mode=0o700)
        pg = EmbeddedPostgres(deep / "pg")
        pg.start()
        try:
            owner = psutil.Process(server_pid(pg)).username()
            assert owner == ("pgserver" if os.geteuid() == 0 else psutil.Process().username())
            # Postgres and Redis children are in their own process groups: a Ctrl-C in the
            # terminal reaches only us, and we stop them in order.
            assert os.getpgid(server_pid(pg)) == server_pid(pg) != os.getpgrp()
        finally:
            pg.stop()
    finally:
        subprocess.run(["rm", "-rf", str(parent)], check=True)


def test_a_server_started_from_a_finished_thread_keeps_running(tmp_path: Path) -> None:
    # PR_SET_PDEATHSIG fires when the forking *thread* ends; asyncio.to_thread workers end
    # with their event loop.
    r = EmbeddedRedis(tmp_path / "redis")
    thread = threading.Thread(target=r.start)
    thread.start()
    thread.join()
    try:
        time.sleep(0.5)
        assert r.is_running()
    finally:
        r.stop()


@pytest.mark.asyncio
async def test_create_database_is_idempotent_and_quotes_names(tmp_path: Path) -> None:
    pg = EmbeddedPostgres(tmp_path / "pg", database="app")
    pg.start()
    try:
        name = 'test "gw0"; DROP'
        pg.create_database(name)
        pg.create_database(name)
        conn = await asyncpg.connect(pg.dsn("postgres"))
        try:
            names = {r["datname"] for r in await conn.fetch("SELECT datname FROM pg_database")}
        finally:
            await conn.close()
        assert {"app", name} <= names
    finally:
        pg.stop()


def test_paths_layout(tmp_path: Path) -> None:
    paths = EmbeddedPaths(tmp_path)
    assert (paths.postgres, paths.redis, paths.logs) == (
        tmp_path / "postgres",
        tmp_path / "redis",
        tmp_path / "logs",
    )
