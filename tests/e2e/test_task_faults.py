"""Tasks under faults, with real processes: a worker killed mid-task, Redis down during
RunWorkflow, cancelling a queued task, racing sweepers, a 10 MB answer, deletes, ListTasks
pages, deadlines and disabled sources.

Every test asserts what a user would notice (states, attempts, errors, stored events);
``asyncio.timeout`` bounds are only hang guards.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import grpc
import psutil
import pytest
import redis
from google.protobuf import duration_pb2, field_mask_pb2, timestamp_pb2
from rq import Queue, Worker
from sqlalchemy import text

from spark_grpc import defaults
from spark_grpc._gen.spark.v1 import source_pb2, task_pb2
from spark_grpc._gen.spark.v1 import source_service_pb2 as ss
from spark_grpc._gen.spark.v1 import task_service_pb2 as ts
from spark_grpc._gen.spark.v1 import workflow_service_pb2 as ws
from spark_grpc.config import Settings
from spark_grpc.db.session import Database, create_engine
from spark_grpc.defaults import MAX_MESSAGE_BYTES
from spark_grpc.demo import fake_data
from spark_grpc.demo.fake_sources import FakeSources
from spark_grpc.domain.tasks import RetryPolicy
from spark_grpc.embedded import EmbeddedStack
from spark_grpc.tasks import store
from spark_grpc.tasks.queue import QUEUE_NAME, TaskQueue, job_id_for
from spark_grpc.worker.sweeper import sweep_once
from tests.support import (
    ServerProcess,
    Stubs,
    WorkerProcess,
    error_info,
    expect_error,
    rq_worker_process_named,
    rq_worker_processes,
    start_worker_process,
)

S = task_pb2
TERMINAL = {
    S.TASK_STATE_SUCCEEDED,
    S.TASK_STATE_FAILED,
    S.TASK_STATE_CANCELLED,
    S.TASK_STATE_TIMED_OUT,
}


# -- helpers -------------------------------------------------------------------------------


async def langflow_source(stubs: Stubs, fake: FakeSources) -> source_pb2.Source:
    response = await stubs.sources.CreateSource(
        ss.CreateSourceRequest(
            source=source_pb2.Source(
                display_name="LangFlow",
                type=source_pb2.SOURCE_TYPE_LANGFLOW,
                url=fake.url("langflow"),
            )
        )
    )
    return response.source


async def import_flow(stubs: Stubs, source_id: str, flow_id: str = fake_data.FLOW_ECHO) -> str:
    response = await stubs.workflows.ImportWorkflow(
        ws.ImportWorkflowRequest(source_id=source_id, remote_flow_id=flow_id)
    )
    return response.workflow.id


async def echo_workflow(stubs: Stubs, fake: FakeSources) -> str:
    return await import_flow(stubs, (await langflow_source(stubs, fake)).id)


def run_request(
    workflow_id: str,
    input_value: str = "hello",
    *,
    max_attempts: int = 0,
    initial_interval_ms: int = 100,
    timeout_s: int = 0,
) -> ws.RunWorkflowRequest:
    request = ws.RunWorkflowRequest(workflow_id=workflow_id, input_value=input_value)
    request.retry_policy.initial_interval.FromMilliseconds(initial_interval_ms)
    if max_attempts:
        request.retry_policy.maximum_attempts = max_attempts
    if timeout_s:
        request.timeout.CopyFrom(duration_pb2.Duration(seconds=timeout_s))
    return request


async def get_task(stubs: Stubs, task_id: str) -> task_pb2.Task:
    return (await stubs.tasks.GetTask(ts.GetTaskRequest(id=task_id))).task


async def wait_state(
    stubs: Stubs, task_id: str, states: set[int], timeout: float = 60
) -> task_pb2.Task:
    async with asyncio.timeout(timeout):
        while True:
            task = await get_task(stubs, task_id)
            if task.state in states:
                return task
            await asyncio.sleep(0.05)


async def wait_terminal(stubs: Stubs, task_id: str, timeout: float = 60) -> task_pb2.Task:
    return await wait_state(stubs, task_id, TERMINAL, timeout)


async def events_of(stubs: Stubs, task_id: str, page_size: int = 1000) -> list[task_pb2.TaskEvent]:
    events: list[task_pb2.TaskEvent] = []
    token = ""
    while True:
        page = await stubs.tasks.ListTaskEvents(
            ts.ListTaskEventsRequest(task_id=task_id, page_size=page_size, page_token=token)
        )
        events += page.events
        token = page.next_page_token
        if not token:
            return events


def state_changes(events: list[task_pb2.TaskEvent]) -> list[task_pb2.TaskStateChange]:
    return [e.state_change for e in events if e.HasField("state_change")]


async def cancel_quietly(stubs: Stubs, task_ids: list[str]) -> None:
    """Cancels tasks that may already be terminal (cleanup)."""
    for task_id in task_ids:
        try:
            await stubs.tasks.CancelTask(ts.CancelTaskRequest(id=task_id, reason="test cleanup"))
        except grpc.aio.AioRpcError as err:
            if err.code() not in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND):
                raise


async def start_own_workers(
    server_env: dict[str, str], tmp_path: Path, concurrency: int
) -> WorkerProcess:
    return await asyncio.to_thread(
        start_worker_process, server_env, tmp_path, concurrency=concurrency
    )


async def wait_process_gone(proc: psutil.Process) -> None:
    async with asyncio.timeout(10):
        while True:
            try:
                if proc.status() == psutil.STATUS_ZOMBIE:
                    return
            except psutil.NoSuchProcess:
                return
            await asyncio.sleep(0.05)


# -- 1. kill -9 a worker mid-task ----------------------------------------------------------


async def run_on_own_worker(
    stubs: Stubs, workflow_id: str, own: WorkerProcess, redis_url: str, occupiers: list[str], **kw
) -> task_pb2.Task:
    """Runs hanging tasks until one is RUNNING on a worker of ``own``.

    Tasks that land on other workers (the session's, if an earlier test started them) stay
    hanging in ``occupiers``, so those workers are busy and the next run goes elsewhere:
    no worker but ours is ever killed.
    """
    for i in range(len(rq_worker_processes(redis_url)) + 4):
        run = await stubs.workflows.RunWorkflow(run_request(workflow_id, f"victim {i}", **kw))
        task = await wait_state(stubs, run.task.id, {S.TASK_STATE_RUNNING}, timeout=30)
        proc = rq_worker_process_named(task.worker_name)
        if proc is not None and proc.ppid() == own.process.pid:
            return task
        occupiers.append(task.id)
    raise AssertionError("no task reached a worker of our own supervisor")


@pytest.mark.parametrize(
    ("max_attempts", "final_state", "lost_to"),
    [
        (3, S.TASK_STATE_SUCCEEDED, S.TASK_STATE_PENDING),
        (1, S.TASK_STATE_FAILED, S.TASK_STATE_FAILED),
    ],
    ids=["retried", "failed"],
)
async def test_worker_killed_mid_task(
    stubs: Stubs,
    fake: FakeSources,
    server_env: dict[str, str],
    redis_url: str,
    tmp_path: Path,
    max_attempts: int,
    final_state: int,
    lost_to: int,
    fault_report: list[str],
) -> None:
    # Two processes: if one is killed, its sibling can run the next attempt.
    own = await start_own_workers(server_env, tmp_path, concurrency=2)
    occupiers: list[str] = []
    try:
        workflow_id = await echo_workflow(stubs, fake)
        fake.state.configure("langflow", hang=True)
        task = await run_on_own_worker(
            stubs, workflow_id, own, redis_url, occupiers, max_attempts=max_attempts
        )
        assert task.attempt == 1
        victim = rq_worker_process_named(task.worker_name)
        assert victim is not None, f"no process named {task.worker_name}"
        victim.kill()  # SIGKILL: no cleanup, the lease simply stops being renewed
        await wait_process_gone(victim)

        fake.state.configure("langflow", reset=True)  # the next attempt gets an answer
        await cancel_quietly(stubs, occupiers)
        done = await wait_terminal(stubs, task.id)

        assert done.state == final_state, done.error
        changes = state_changes(await events_of(stubs, task.id))
        lost = [c for c in changes if c.from_state == S.TASK_STATE_RUNNING and c.attempt == 1]
        assert len(lost) == 1 and lost[0].to_state == lost_to
        assert lost[0].error.kind == "WORKER_LOST" and task.worker_name in lost[0].error.message
        if final_state == S.TASK_STATE_SUCCEEDED:
            assert done.attempt == 2 and done.output_text == task.input_value
            assert changes[-1].from_state == S.TASK_STATE_RUNNING and changes[-1].attempt == 2
        else:
            assert done.attempt == 1 and done.error.kind == "WORKER_LOST"
            assert done.max_attempts == 1
        # One attempt at a time: exactly one claim per attempt.
        claims = [c.attempt for c in changes if c.to_state == S.TASK_STATE_RUNNING]
        assert claims == list(range(1, done.attempt + 1))
        fault_report.append(
            f"worker SIGKILLed mid-task (max_attempts={max_attempts}): task ended "
            f"{S.TaskState.Name(done.state)} at attempt {done.attempt}, one WORKER_LOST "
            f"change, claims {claims}, {done.last_event_sequence} events"
        )
    finally:
        fake.state.configure("langflow", reset=True)
        await cancel_quietly(stubs, occupiers)
        await asyncio.to_thread(own.stop)


def live_children(pid: int) -> set[int]:
    """Pids of a process's children that are alive (not exited, not zombies)."""
    live = set()
    for child in psutil.Process(pid).children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                live.add(child.pid)
        except psutil.NoSuchProcess:
            continue
    return live


def registered_pids(redis_url: str, supervisor_pid: int) -> set[int]:
    """Pids of the RQ workers registered in Redis under a supervisor's names
    (``{host}.{supervisor pid}.{slot}``)."""
    with redis.Redis.from_url(redis_url) as connection:
        return {w.pid for w in Worker.all(connection=connection) if f".{supervisor_pid}." in w.name}


async def test_supervisor_replaces_a_killed_worker(
    server_env: dict[str, str], redis_url: str, tmp_path: Path
) -> None:
    own = await start_own_workers(server_env, tmp_path, concurrency=1)
    refused = "There exists an active worker named"
    try:
        (child,) = own.children()
        child.kill()
        await wait_process_gone(child)
        # The replacement either registers with RQ, or RQ refuses its name.
        async with asyncio.timeout(30):
            while True:
                live = live_children(own.process.pid) - {child.pid}
                if registered_pids(redis_url, own.process.pid) & live or refused in own.log():
                    break
                await asyncio.sleep(0.1)
        assert refused not in own.log(), "the replacement worker could not register"
    finally:
        await asyncio.to_thread(own.stop)


# -- 2. Redis down during RunWorkflow ------------------------------------------------------


async def test_run_while_redis_is_down_waits_pending_then_runs(
    stubs: Stubs,
    fake: FakeSources,
    workers: WorkerProcess,
    stack: EmbeddedStack | None,
    fault_report: list[str],
) -> None:
    if stack is None:
        pytest.skip("needs the embedded Redis, to stop and restart it")
    workflow_id = await echo_workflow(stubs, fake)
    await asyncio.to_thread(stack.redis.stop, kill=True)
    try:
        run = await stubs.workflows.RunWorkflow(run_request(workflow_id, "while redis is down"))
        assert run.task.state == S.TASK_STATE_PENDING
        assert (await get_task(stubs, run.task.id)).state == S.TASK_STATE_PENDING
    finally:
        await asyncio.to_thread(stack.redis.start)
    # The sweeper queues it once Redis is back, and the workers' RQ loops reconnect.
    done = await wait_terminal(stubs, run.task.id)
    assert done.state == S.TASK_STATE_SUCCEEDED, done.error
    assert done.attempt == 1 and done.output_text == "while redis is down"
    fault_report.append(
        "Redis killed, RunWorkflow answered OK with a PENDING task; Redis restarted: the "
        f"sweeper queued it and it ended {S.TaskState.Name(done.state)} at attempt 1"
    )


# -- 3. cancel a queued task ---------------------------------------------------------------


async def test_cancel_queued_task_never_runs(
    stubs: Stubs, fake: FakeSources, workers: WorkerProcess, redis_url: str
) -> None:
    workflow_id = await echo_workflow(stubs, fake)
    fake.state.configure("langflow", hang=True)
    busy: list[str] = []
    try:
        # Occupy every slot of every worker serving this Redis with a hanging task.
        for i in range(len(rq_worker_processes(redis_url)) * defaults.WORKER_SLOTS):
            busy.append(
                (await stubs.workflows.RunWorkflow(run_request(workflow_id, f"busy {i}"))).task.id
            )
        for task_id in busy:
            await wait_state(stubs, task_id, {S.TASK_STATE_RUNNING}, timeout=30)

        queued = (
            await stubs.workflows.RunWorkflow(run_request(workflow_id, "cancelled while queued"))
        ).task
        assert queued.state == S.TASK_STATE_QUEUED
        with redis.Redis.from_url(redis_url) as connection:
            jobs = Queue(QUEUE_NAME, connection=connection)
            assert job_id_for(queued.id) in jobs.job_ids
            cancelled = (
                await stubs.tasks.CancelTask(
                    ts.CancelTaskRequest(id=queued.id, reason="not needed")
                )
            ).task
            assert cancelled.state == S.TASK_STATE_CANCELLED
            assert job_id_for(queued.id) not in jobs.job_ids, "the job was taken off the queue"

        fake.state.configure("langflow", reset=True)
        await cancel_quietly(stubs, busy)
        # The workers are free and the queue drains: a later run completes.
        after = await stubs.workflows.RunWorkflow(run_request(workflow_id, "after"))
        assert (await wait_terminal(stubs, after.task.id)).state == S.TASK_STATE_SUCCEEDED
    finally:
        fake.state.configure("langflow", reset=True)
        await cancel_quietly(stubs, busy)

    final = await get_task(stubs, queued.id)
    assert final.state == S.TASK_STATE_CANCELLED and final.attempt == 0
    assert final.error.message == "not needed" and not final.worker_name
    changes = state_changes(await events_of(stubs, queued.id))
    assert all(c.to_state != S.TASK_STATE_RUNNING for c in changes)
    assert [c.to_state for c in changes][-1] == S.TASK_STATE_CANCELLED
    inputs = [r["json"]["input_value"] for r in fake.state.requests("langflow") if r["json"]]
    assert "cancelled while queued" not in inputs, "the source was never called for it"


# -- 4. two sweepers racing ----------------------------------------------------------------


@pytest.fixture
async def isolated_db(
    pg: asyncpg.Connection, database_url: str, redis_url: str
) -> AsyncIterator[tuple[str, str]]:
    """A database of its own (migrated) and a Redis db of its own, so no running worker
    or sweeper of the session sees what the test writes."""
    name = f"spark_sweep_{uuid.uuid4().hex[:8]}"
    await pg.execute(f'CREATE DATABASE "{name}"')
    url = database_url.rsplit("/", 1)[0] + f"/{name}"
    own_redis = urlsplit(redis_url)._replace(path="/7").geturl()
    try:
        await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "spark_grpc", "migrate"],
            env={**os.environ, "SPARK_DATABASE_URL": url, "SPARK_LOG_FORMAT": "text"},
            check=True,
            capture_output=True,
        )
        yield url, own_redis
    finally:
        with redis.Redis.from_url(own_redis) as connection:
            connection.flushdb()
        await pg.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_two_sweepers_queue_each_task_once(
    isolated_db: tuple[str, str], encryption_key: str
) -> None:
    """300 due PENDING tasks, two sweepers on two engines sweeping at the same time, in
    several rounds: every task is queued exactly once (one PENDING -> QUEUED event, one
    job), and the sweepers' reports add up to 300. No worker sees this database."""
    url, own_redis = isolated_db
    settings = Settings(database_url=url, redis_url=own_redis, encryption_keys=encryption_key)
    dbs = [Database(create_engine(settings, url)) for _ in range(2)]
    queues = [TaskQueue(own_redis) for _ in range(2)]
    try:
        async with dbs[0].session() as session:
            source_id, workflow_id = uuid.uuid4(), uuid.uuid4()
            await session.execute(
                text(
                    "INSERT INTO sources (id, display_name, type, url) "
                    "VALUES (:id, 'S', 'langflow', 'http://127.0.0.1:9/langflow')"
                ),
                {"id": source_id},
            )
            await session.execute(
                text(
                    "INSERT INTO workflows (id, source_id, remote_flow_id, display_name) "
                    "VALUES (:id, :source, 'flow', 'W')"
                ),
                {"id": workflow_id, "source": source_id},
            )
            new = store.NewTask(
                workflow_id=workflow_id,
                input_value="x",
                tweaks={},
                retry_policy=RetryPolicy(),
                timeout_s=60,
            )
            written = await store.insert_tasks(session, [new] * 300)
            ids = [row.id for row, _ in written]
            # Due a while ago: past the sweeper's grace for fresh tasks.
            await session.execute(
                text("UPDATE tasks SET next_attempt_time = clock_timestamp() - interval '1 minute'")
            )
        reports = []
        for _ in range(4):
            reports += await asyncio.gather(
                *(sweep_once(db, queue) for db, queue in zip(dbs, queues, strict=True))
            )
        assert sum(r.pending_queued for r in reports) == 300
        async with dbs[0].session() as session:
            counts = (
                await session.execute(
                    text(
                        "SELECT t.id, t.state, count(e.*) FILTER (WHERE "
                        "e.data->>'from' = 'PENDING' AND e.data->>'to' = 'QUEUED') AS queued "
                        "FROM tasks t LEFT JOIN task_events e ON e.task_id = t.id GROUP BY t.id"
                    )
                )
            ).all()
        assert len(counts) == 300
        assert {(r.state, r.queued) for r in counts} == {("QUEUED", 1)}
        job_ids = Queue(QUEUE_NAME, connection=queues[0].connection).job_ids
        assert sorted(job_ids) == sorted(job_id_for(i) for i in ids), "one job per task"
    finally:
        for queue in queues:
            queue.close()
        for db in dbs:
            await db.close()


# -- 5. a 10 MB answer ---------------------------------------------------------------------


async def run_big_answer(stubs: Stubs, fake: FakeSources, size: int) -> task_pb2.Task:
    workflow_id = await echo_workflow(stubs, fake)
    fake.state.configure("langflow", big_output_bytes=size)
    run = await stubs.workflows.RunWorkflow(run_request(workflow_id, "big"))
    done = await wait_terminal(stubs, run.task.id, timeout=90)
    assert done.state == S.TASK_STATE_SUCCEEDED, done.error
    return done


def output_of(events: list[task_pb2.TaskEvent], size: int) -> object:
    """The answer rebuilt from its "output" chunks: valid JSON of exactly ``size`` bytes."""
    chunks = [
        e.output_chunk
        for e in events
        if e.HasField("output_chunk") and e.output_chunk.source_event == "output"
    ]
    assert chunks and chunks[-1].last and not any(c.last for c in chunks[:-1])
    answer = "".join(c.text for c in chunks).encode()
    assert len(answer) == size
    return json.loads(answer)


async def test_ten_megabyte_answer_is_stored_and_reachable(
    stubs: Stubs, fake: FakeSources, workers: WorkerProcess, server: ServerProcess
) -> None:
    done = await run_big_answer(stubs, fake, 10_000_000)
    # GetTask never fails because of the size: it says where the answer is instead.
    got = await get_task(stubs, done.id)
    assert got.output_truncated and got.output_size_bytes > 10_000_000
    assert not got.HasField("output")
    assert got.output_text.startswith("big xxx")
    # The event log holds the whole answer; a client accepting the server's message limit
    # (16 MiB) pages through it.
    options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
    async with grpc.aio.insecure_channel(server.address, options=options) as channel:
        events = await events_of(Stubs(channel), done.id)
    output = output_of(events, got.output_size_bytes)
    assert "x" * 9_000_000 in json.dumps(output)


async def test_big_answer_event_pages_fit_a_default_client(
    stubs: Stubs, fake: FakeSources, workers: WorkerProcess
) -> None:
    done = await run_big_answer(stubs, fake, 5_000_000)
    events = await events_of(stubs, done.id)  # default channel options: 4 MiB messages
    output_of(events, done.output_size_bytes)


# -- 6. DeleteTask and DeleteWorkflow ------------------------------------------------------


async def test_delete_task_and_workflow_rules(
    stubs: Stubs, fake: FakeSources, workers: WorkerProcess, pg: asyncpg.Connection
) -> None:
    workflow_id = await echo_workflow(stubs, fake)
    fake.state.configure("langflow", hang=True)
    running = (await stubs.workflows.RunWorkflow(run_request(workflow_id, "running"))).task
    await wait_state(stubs, running.id, {S.TASK_STATE_RUNNING}, timeout=30)
    try:
        err = await expect_error(
            stubs.tasks.DeleteTask(ts.DeleteTaskRequest(id=running.id)),
            grpc.StatusCode.FAILED_PRECONDITION,
        )
        assert error_info(err).reason == "TASK_NOT_TERMINAL"
        err = await expect_error(
            stubs.workflows.DeleteWorkflow(ws.DeleteWorkflowRequest(id=workflow_id, force=True)),
            grpc.StatusCode.FAILED_PRECONDITION,
        )
        assert error_info(err).reason == "WORKFLOW_HAS_RUNNING_TASKS"
        err = await expect_error(
            stubs.workflows.DeleteWorkflow(ws.DeleteWorkflowRequest(id=workflow_id)),
            grpc.StatusCode.FAILED_PRECONDITION,
        )
        assert error_info(err).reason == "WORKFLOW_HAS_TASKS"
    finally:
        fake.state.configure("langflow", reset=True)
        await cancel_quietly(stubs, [running.id])
    assert (await get_task(stubs, running.id)).state == S.TASK_STATE_CANCELLED

    # A terminal task is deleted with its events.
    await stubs.tasks.DeleteTask(ts.DeleteTaskRequest(id=running.id))
    await expect_error(
        stubs.tasks.GetTask(ts.GetTaskRequest(id=running.id)), grpc.StatusCode.NOT_FOUND
    )
    await expect_error(
        stubs.tasks.ListTaskEvents(ts.ListTaskEventsRequest(task_id=running.id)),
        grpc.StatusCode.NOT_FOUND,
    )
    assert await pg.fetchval("SELECT count(*) FROM task_events WHERE task_id = $1", running.id) == 0

    # A workflow with (terminal) tasks: refused without force, deleted with it.
    done = await wait_terminal(
        stubs, (await stubs.workflows.RunWorkflow(run_request(workflow_id, "done"))).task.id
    )
    assert done.state == S.TASK_STATE_SUCCEEDED
    err = await expect_error(
        stubs.workflows.DeleteWorkflow(ws.DeleteWorkflowRequest(id=workflow_id)),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert error_info(err).reason == "WORKFLOW_HAS_TASKS"
    assert (await get_task(stubs, done.id)).state == S.TASK_STATE_SUCCEEDED, "nothing deleted"
    deleted = await stubs.workflows.DeleteWorkflow(
        ws.DeleteWorkflowRequest(id=workflow_id, force=True)
    )
    assert deleted.deleted_task_count == 1
    await expect_error(
        stubs.tasks.GetTask(ts.GetTaskRequest(id=done.id)), grpc.StatusCode.NOT_FOUND
    )
    await expect_error(
        stubs.workflows.GetWorkflow(ws.GetWorkflowRequest(id=workflow_id)),
        grpc.StatusCode.NOT_FOUND,
    )
    assert await pg.fetchval("SELECT count(*) FROM tasks") == 0
    assert await pg.fetchval("SELECT count(*) FROM task_events") == 0


# -- 7. ListTasks filters and pages --------------------------------------------------------


def ts_of(moment: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


async def list_all(stubs: Stubs, request: ts.ListTasksRequest) -> list[task_pb2.Task]:
    tasks: list[task_pb2.Task] = []
    while True:
        page = await stubs.tasks.ListTasks(request)
        assert len(page.tasks) <= (request.page_size or 50)
        tasks += page.tasks
        if not page.next_page_token:
            return tasks
        request.page_token = page.next_page_token


async def test_list_tasks_filters_and_pages(
    stubs: Stubs, fake: FakeSources, workers: WorkerProcess
) -> None:
    source = await langflow_source(stubs, fake)
    wf_a = await import_flow(stubs, source.id, fake_data.FLOW_ECHO)
    wf_b = await import_flow(stubs, source.id, fake_data.FLOW_POLITE_ECHO)
    succeeded = []
    for i in range(4):
        run = await stubs.workflows.RunWorkflow(run_request(wf_a, f"a{i}"))
        succeeded.append(await wait_terminal(stubs, run.task.id))
    assert {t.state for t in succeeded} == {S.TASK_STATE_SUCCEEDED}
    fake.state.configure("langflow", hang=True)
    b_ids = [
        (await stubs.workflows.RunWorkflow(run_request(wf_b, f"b{i}"))).task.id for i in range(5)
    ]
    try:
        for task_id in b_ids:
            await stubs.tasks.CancelTask(ts.CancelTaskRequest(id=task_id))
    finally:
        fake.state.configure("langflow", reset=True)
        await cancel_quietly(stubs, b_ids)
    everything = [await get_task(stubs, t.id) for t in succeeded] + [
        await get_task(stubs, t) for t in b_ids
    ]
    newest_first = sorted(
        everything, key=lambda t: (t.create_time.ToNanoseconds(), t.id), reverse=True
    )

    def ids(tasks: list[task_pb2.Task]) -> list[str]:
        return [t.id for t in tasks]

    # Keyset pages, newest first, no duplicates, nothing missed.
    for size in (1, 2, 4, 100):
        listed = await list_all(stubs, ts.ListTasksRequest(page_size=size))
        assert ids(listed) == ids(newest_first), f"page_size={size}"
    # Filters, alone and together, also across pages.
    by_a = await list_all(stubs, ts.ListTasksRequest(page_size=3, workflow_id=wf_a))
    assert ids(by_a) == [t.id for t in newest_first if t.workflow_id == wf_a]
    cancelled = await list_all(
        stubs, ts.ListTasksRequest(page_size=2, states=[S.TASK_STATE_CANCELLED])
    )
    assert ids(cancelled) == [t for t in ids(newest_first) if t in b_ids]
    both_states = await list_all(
        stubs,
        ts.ListTasksRequest(
            page_size=2, states=[S.TASK_STATE_CANCELLED, S.TASK_STATE_SUCCEEDED], workflow_id=wf_b
        ),
    )
    assert ids(both_states) == ids(cancelled)
    assert not await list_all(
        stubs, ts.ListTasksRequest(workflow_id=wf_a, states=[S.TASK_STATE_CANCELLED])
    )
    # create_time_after is inclusive, create_time_before exclusive.
    oldest_first = newest_first[::-1]
    pivot = oldest_first[2].create_time.ToDatetime(tzinfo=UTC)
    end = oldest_first[6].create_time.ToDatetime(tzinfo=UTC)
    after = await list_all(stubs, ts.ListTasksRequest(page_size=2, create_time_after=ts_of(pivot)))
    assert ids(after) == ids(newest_first[: len(newest_first) - 2])
    window = await list_all(
        stubs,
        ts.ListTasksRequest(
            page_size=2, create_time_after=ts_of(pivot), create_time_before=ts_of(end)
        ),
    )
    assert ids(window) == ids(oldest_first[2:6][::-1])
    future = datetime.now(UTC) + timedelta(hours=1)
    assert not await list_all(stubs, ts.ListTasksRequest(create_time_after=ts_of(future)))


# -- 8. a deadline -------------------------------------------------------------------------


async def test_retry_past_the_deadline_ends_timed_out(
    stubs: Stubs, fake: FakeSources, workers: WorkerProcess
) -> None:
    workflow_id = await echo_workflow(stubs, fake)
    fake.state.configure("langflow", hang=True)
    request = run_request(
        workflow_id, "late", max_attempts=5, initial_interval_ms=5000, timeout_s=1
    )
    request.deadline_time.CopyFrom(ts_of(datetime.now(UTC) + timedelta(seconds=2)))
    run = await stubs.workflows.RunWorkflow(request)
    try:
        done = await wait_terminal(stubs, run.task.id, timeout=30)
    finally:
        fake.state.configure("langflow", reset=True)
    assert done.state == S.TASK_STATE_TIMED_OUT
    assert done.attempt == 1 and done.error.kind in ("SOURCE_TIMEOUT", "DEADLINE_EXCEEDED")
    changes = state_changes(await events_of(stubs, done.id))
    assert not any(c.to_state == S.TASK_STATE_PENDING and c.attempt for c in changes), (
        "no retry was scheduled past the deadline"
    )
    assert changes[-1].from_state == S.TASK_STATE_RUNNING
    assert changes[-1].to_state == S.TASK_STATE_TIMED_OUT


# -- 9. a disabled source ------------------------------------------------------------------


async def test_run_on_disabled_source_is_refused(
    stubs: Stubs, fake: FakeSources, pg: asyncpg.Connection
) -> None:
    source = await langflow_source(stubs, fake)
    workflow_id = await import_flow(stubs, source.id)
    await stubs.sources.UpdateSource(
        ss.UpdateSourceRequest(
            source=source_pb2.Source(id=source.id, enabled=False),
            update_mask=field_mask_pb2.FieldMask(paths=["enabled"]),
        )
    )
    err = await expect_error(
        stubs.workflows.RunWorkflow(run_request(workflow_id)), grpc.StatusCode.FAILED_PRECONDITION
    )
    assert error_info(err).reason == "SOURCE_DISABLED"
    batch = ws.BatchRunWorkflowsRequest(requests=[run_request(workflow_id)])
    err = await expect_error(
        stubs.workflows.BatchRunWorkflows(batch), grpc.StatusCode.FAILED_PRECONDITION
    )
    assert error_info(err).reason == "SOURCE_DISABLED"
    assert await pg.fetchval("SELECT count(*) FROM tasks") == 0, "nothing was written"
