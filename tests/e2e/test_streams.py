"""WatchTask and WatchTasks end to end: real server processes, real Redis, real RQ workers,
real grpc.aio clients.

What a client relies on, asserted as outcomes: a WatchTask stream (opened at any moment,
resumed any number of times) delivers exactly the persisted log, in order, with no gap and
no duplicate, and ends OK right after the terminal state change; a WatchTasks feed resumed
from its cursors delivers exactly the matching state changes; slow readers, many readers,
two servers and a Redis restart change none of that; shutdown, deadlines and bad input end
streams with the documented codes. ``asyncio.timeout`` bounds are only hang guards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
import redis.asyncio as aioredis

from spark_grpc._gen.spark.v1 import task_pb2, task_service_pb2_grpc
from spark_grpc._gen.spark.v1 import task_service_pb2 as ts
from spark_grpc._gen.spark.v1 import workflow_service_pb2 as ws
from spark_grpc.config import Settings
from spark_grpc.crypto import SecretBox
from spark_grpc.db.session import Database, create_engine
from spark_grpc.demo import fake_data
from spark_grpc.demo.fake_sources import FakeSources
from spark_grpc.embedded import EmbeddedError, EmbeddedStack
from spark_grpc.events.publisher import EventPublisher
from spark_grpc.pagination import PageTokens
from spark_grpc.server import SparkServer, build_deps, build_server
from spark_grpc.tasks import store
from tests.e2e.test_tasks import echo_workflow
from tests.support import (
    ServerProcess,
    Stubs,
    WorkerProcess,
    field_violations,
    start_server_process,
)

S = task_pb2
TERMINAL = {
    S.TASK_STATE_SUCCEEDED,
    S.TASK_STATE_FAILED,
    S.TASK_STATE_CANCELLED,
    S.TASK_STATE_TIMED_OUT,
}
TaskStub = task_service_pb2_grpc.TaskServiceStub


@pytest.fixture(autouse=True)
async def _flush_redis(redis_client: aioredis.Redis) -> None:
    await redis_client.flushdb()


# -- helpers -------------------------------------------------------------------------------


def words(n: int, width: int = 0) -> str:
    """n distinct words (each padded to about ``width`` characters): one token event each."""
    return " ".join(f"w{i}".ljust(width, "x") for i in range(n))


async def run_task(stubs: Stubs, workflow_id: str, text: str = "hello") -> str:
    request = ws.RunWorkflowRequest(workflow_id=workflow_id, input_value=text)
    return (await stubs.workflows.RunWorkflow(request)).task.id


async def get_task(stub: TaskStub, task_id: str) -> task_pb2.Task:
    return (await stub.GetTask(ts.GetTaskRequest(id=task_id))).task


async def wait_state(stub: TaskStub, task_id: str, states: set[int], timeout: float = 30) -> None:
    async with asyncio.timeout(timeout):
        while (await get_task(stub, task_id)).state not in states:
            await asyncio.sleep(0.05)


async def wait_until(check: Callable[[], bool | Awaitable[bool]], timeout: float = 60) -> None:
    async with asyncio.timeout(timeout):
        while True:
            result = check()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            await asyncio.sleep(0.05)


async def persisted_log(stub: TaskStub, task_id: str, page_size: int = 37) -> list[Any]:
    """The task's events as ListTaskEvents pages them (small pages: many page tokens)."""
    events: list[task_pb2.TaskEvent] = []
    token = ""
    while True:
        page = await stub.ListTaskEvents(
            ts.ListTaskEventsRequest(task_id=task_id, page_size=page_size, page_token=token)
        )
        events += page.events
        token = page.next_page_token
        if not token:
            return events


def wire(events: list[task_pb2.TaskEvent]) -> list[bytes]:
    return [e.SerializeToString(deterministic=True) for e in events]


def is_terminal_change(event: task_pb2.TaskEvent) -> bool:
    return event.HasField("state_change") and event.state_change.to_state in TERMINAL


async def assert_full_log(stub: TaskStub, task_id: str, streams: list[list[Any]]) -> list[Any]:
    """Every stream is exactly the task's log: 1..N, N = last_event_sequence, ending with
    the terminal state change, message for message what ListTaskEvents pages return."""
    task = await get_task(stub, task_id)
    assert task.state in TERMINAL
    log = await persisted_log(stub, task_id)
    n = task.last_event_sequence
    assert [e.sequence for e in log] == list(range(1, n + 1))
    assert is_terminal_change(log[-1])
    for i, events in enumerate(streams):
        sequences = [e.sequence for e in events]
        assert sequences == list(range(1, n + 1)), (
            f"stream {i} of {len(streams)}: got {len(sequences)} events, "
            f"first gap/duplicate near {_first_bad(sequences)}; want 1..{n}"
        )
        assert wire(events) == wire(log), f"stream {i} differs from ListTaskEvents"
    return log


def _first_bad(sequences: list[int]) -> int | None:
    for i, s in enumerate(sequences):
        if s != i + 1:
            return i
    return None


class Watch:
    """One WatchTask call, read by a background task; ``events`` grows as they arrive."""

    def __init__(
        self,
        stub: TaskStub,
        task_id: str,
        after: int = 0,
        *,
        limit: int | None = None,
        pause_s: float = 0.0,
        timeout: float | None = None,
    ) -> None:
        self.events: list[task_pb2.TaskEvent] = []
        self.heartbeats = 0
        self.code: grpc.StatusCode | None = None
        self.error: grpc.aio.AioRpcError | None = None
        self.call = stub.WatchTask(
            ts.WatchTaskRequest(task_id=task_id, after_sequence=after), timeout=timeout
        )
        self._limit = limit
        self._pause_s = pause_s
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> list[task_pb2.TaskEvent]:
        try:
            async for response in self.call:
                if response.HasField("event"):
                    self.events.append(response.event)
                    if self._limit is not None and len(self.events) >= self._limit:
                        self.call.cancel()
                        self.code = grpc.StatusCode.CANCELLED
                        return self.events
                else:
                    assert response.HasField("heartbeat") and response.heartbeat.time.seconds
                    self.heartbeats += 1
                if self._pause_s:
                    await asyncio.sleep(self._pause_s)
        except grpc.aio.AioRpcError as err:
            self.error, self.code = err, err.code()
            return self.events
        self.code = await self.call.code()
        return self.events

    async def done(self, timeout: float = 60) -> list[task_pb2.TaskEvent]:
        async with asyncio.timeout(timeout):
            return await self.task


async def finish(watches: list[Watch], timeout: float = 60) -> list[list[Any]]:
    """Every watcher's events once all have ended (one hang guard for them all)."""
    async with asyncio.timeout(timeout):
        return list(await asyncio.gather(*(w.task for w in watches)))


async def watch_all(stub: TaskStub, task_id: str, after: int = 0, **kw: Any) -> list[Any]:
    """The whole stream, which must end OK by itself."""
    watch = Watch(stub, task_id, after, **kw)
    events = await watch.done()
    assert watch.code == grpc.StatusCode.OK, (watch.code, watch.error)
    return events


async def watch_in_segments(stub: TaskStub, task_id: str, k: int) -> tuple[list[Any], int]:
    """Reads at most k events per call, cancels it, resumes from the last sequence seen,
    until a call ends by itself. Returns everything read and the number of calls."""
    events: list[task_pb2.TaskEvent] = []
    calls = 0
    while True:
        after = events[-1].sequence if events else 0
        if events and is_terminal_change(events[-1]):
            task = await get_task(stub, task_id)
            if task.state in TERMINAL and task.last_event_sequence == after:
                return events, calls  # see test_resume_after_the_terminal_event_ends_at_once
        watch = Watch(stub, task_id, after, limit=k)
        got = await watch.done()
        calls += 1
        events += got
        if watch.code != grpc.StatusCode.CANCELLED:
            assert watch.code == grpc.StatusCode.OK, (watch.code, watch.error)
            return events, calls


async def stream_error(call: Any) -> grpc.aio.AioRpcError:
    """Reads a streaming call to its end (with ``read``); it must fail. Returns the error."""
    try:
        async with asyncio.timeout(30):
            while await call.read() is not grpc.aio.EOF:
                pass
    except grpc.aio.AioRpcError as err:
        return err
    raise AssertionError("the stream ended OK; expected an error")


async def langflow_workflows(stubs: Stubs, fake: FakeSources) -> tuple[str, str]:
    """Two workflows of one LangFlow source (echo and polite echo)."""
    a = await echo_workflow(stubs, fake)
    source_id = (await stubs.workflows.GetWorkflow(ws.GetWorkflowRequest(id=a))).workflow.source_id
    b = await stubs.workflows.ImportWorkflow(
        ws.ImportWorkflowRequest(source_id=source_id, remote_flow_id=fake_data.FLOW_POLITE_ECHO)
    )
    return a, b.workflow.id


# -- 1. exactly once, in order, across the replay -> live switch -----------------------------


async def test_watchers_opened_at_any_moment_get_the_exact_log(
    stubs: Stubs, fake: FakeSources, workers: WorkerProcess
) -> None:
    workflow_id = await echo_workflow(stubs, fake)
    fake.state.configure("langflow", delay_s=0.3)
    task_id = await run_task(stubs, workflow_id, words(300))
    watches = [Watch(stubs.tasks, task_id)]  # before it runs
    opened_at: list[int] = [0]
    # While it runs: a new watcher after each look at the task (how much of the log exists).
    while len(watches) < 120:
        task = await get_task(stubs.tasks, task_id)
        watches.append(Watch(stubs.tasks, task_id))
        opened_at.append(task.last_event_sequence)
        if task.state in TERMINAL:
            break
        await asyncio.sleep(0.005)
    await wait_state(stubs.tasks, task_id, TERMINAL)
    watches += [Watch(stubs.tasks, task_id) for _ in range(3)]  # after it ended
    streams = await finish(watches)
    assert all(w.code == grpc.StatusCode.OK for w in watches), [w.code for w in watches]
    log = await assert_full_log(stubs.tasks, task_id, streams)
    assert len(log) > 300, "one event per token"
    assert (await get_task(stubs.tasks, task_id)).state == S.TASK_STATE_SUCCEEDED
    assert any(0 < at < len(log) for at in opened_at), "some watchers opened mid-run"


async def test_racing_writer_in_small_batches_never_causes_a_gap_or_duplicate(
    stubs: Stubs,
    fake: FakeSources,
    workers: WorkerProcess,
    server_env: dict[str, str],
    database_url: str,
) -> None:
    """The same, with a writer we pace: a RUNNING task (its source hangs) gets ~240 events in
    batches of 1..7 through the workers' own write-then-publish path, while watchers open
    between and during the batches; a cancel ends it."""
    workflow_id = await echo_workflow(stubs, fake)
    fake.state.configure("langflow", hang=True)
    task_id = await run_task(stubs, workflow_id)
    await wait_state(stubs.tasks, task_id, {S.TASK_STATE_RUNNING})
    attempt = (await get_task(stubs.tasks, task_id)).attempt
    settings = Settings(
        database_url=database_url,
        redis_url=server_env["SPARK_REDIS_URL"],
        encryption_keys=server_env["SPARK_ENCRYPTION_KEYS"],
    )
    publisher = EventPublisher(settings.redis_url)
    db = Database(create_engine(settings, database_url), publisher)
    watches: list[Watch] = []
    try:

        async def write(batch: int, size: int) -> None:
            async with db.session() as session:
                events = [
                    ("log", {"level": "LOG_LEVEL_INFO", "message": f"batch {batch} line {i}"})
                    for i in range(size)
                ]
                assert await store.append_events(session, uuid.UUID(task_id), attempt, events)

        written = 0
        for batch in range(60):
            size = 1 + (batch * 5) % 7
            writing = asyncio.create_task(write(batch, size))
            if batch % 3 == 0:
                watches.append(Watch(stubs.tasks, task_id))  # while a batch commits
            await writing
            written += size
            if batch % 3 == 1:
                watches.append(Watch(stubs.tasks, task_id))  # between batches
            if batch % 10 == 0:
                await asyncio.sleep(0.01)  # let live delivery catch up now and then
    finally:
        await db.close()
        await publisher.close()
    await stubs.tasks.CancelTask(ts.CancelTaskRequest(id=task_id, reason="enough"))
    watches.append(Watch(stubs.tasks, task_id))
    streams = await finish(watches)
    assert all(w.code == grpc.StatusCode.OK for w in watches), [w.code for w in watches]
    log = await assert_full_log(stubs.tasks, task_id, streams)
    assert sum(e.HasField("log") for e in log) == written
    assert log[-1].state_change.to_state == S.TASK_STATE_CANCELLED


# -- 2. disconnect mid-stream and resume ------------------------------------------------------


async def test_disconnect_and_resume_from_the_last_sequence(
    stubs: Stubs, fake: FakeSources, workers: WorkerProcess
) -> None:
    workflow_id = await echo_workflow(stubs, fake)
    fake.state.configure("langflow", delay_s=0.3)
    task_id = await run_task(stubs, workflow_id, words(200))
    # Chains of calls that each read k events then hang up, while the task runs ...
    live = [asyncio.create_task(watch_in_segments(stubs.tasks, task_id, k)) for k in (1, 4, 37)]
    live += [asyncio.create_task(watch_in_segments(stubs.tasks, task_id, k)) for k in (90, 200)]
    async with asyncio.timeout(90):
        results = await asyncio.gather(*live)
    # ... and after it ended.
    for k in (2, 150):
        results.append(await watch_in_segments(stubs.tasks, task_id, k))
    log = await assert_full_log(stubs.tasks, task_id, [events for events, _ in results])
    for (_, calls), k in zip(results, (1, 4, 37, 90, 200, 2, 150), strict=True):
        assert calls >= len(log) // k, f"k={k}: the chain really did hang up and resume"


async def test_resume_after_the_terminal_event_ends_at_once(
    stubs: Stubs, fake: FakeSources, workers: WorkerProcess
) -> None:
    """A client that lost its connection right after the terminal event (before it saw the
    OK status) resumes with that sequence: the task is terminal, there is nothing more, the
    stream must close OK, not stay open forever."""
    workflow_id = await echo_workflow(stubs, fake)
    task_id = await run_task(stubs, workflow_id, "short")
    await wait_state(stubs.tasks, task_id, TERMINAL)
    last = (await get_task(stubs.tasks, task_id)).last_event_sequence
    watch = Watch(stubs.tasks, task_id, after=last)
    try:
        async with asyncio.timeout(3):
            events = await watch.task
    except TimeoutError:
        watch.call.cancel()
        pytest.fail(f"WatchTask(after_sequence={last}) on a terminal task never ended")
    assert events == [] and watch.code == grpc.StatusCode.OK


# -- 3. WatchTasks: cursors, racing writers, filters -----------------------------------------


class Feed:
    """A WatchTasks reader that hangs up after every ``cut_every`` changes and resumes from
    the last cursor it received, forever (the test cancels it)."""

    def __init__(self, stub: TaskStub, flt: ts.TaskFilter, cut_every: int) -> None:
        self.stub = stub
        self.filter = flt
        self.cut_every = cut_every
        self.cursor = ""
        self.calls = 0
        self.changes: list[ts.TaskChange] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            call = self.stub.WatchTasks(
                ts.WatchTasksRequest(filter=self.filter, cursor=self.cursor)
            )
            self.calls += 1
            received = 0
            try:
                async for response in call:
                    assert response.cursor
                    self.cursor = response.cursor
                    if response.HasField("change"):
                        self.changes.append(response.change)
                        received += 1
                        if received >= self.cut_every:
                            break
            finally:
                call.cancel()

    def check(self) -> None:
        if self.task.done():
            self.task.result()  # a reader that failed shows its error here

    def of(self, task_id: str) -> list[ts.TaskChange]:
        self.check()
        return [c for c in self.changes if c.event.task_id == task_id]

    def ended(self, task_ids: set[str], states: set[int] = TERMINAL) -> bool:
        self.check()
        seen = {c.event.task_id for c in self.changes if c.event.state_change.to_state in states}
        return task_ids <= seen

    def keys(self) -> list[tuple[str, int]]:
        return [(c.event.task_id, c.event.sequence) for c in self.changes]


async def db_changes(
    pg: asyncpg.Connection, workflow_id: str, state: str | None = None
) -> dict[tuple[str, int], str]:
    rows = await pg.fetch(
        "SELECT e.task_id::text AS task_id, e.sequence, e.data->>'to' AS to_state "
        "FROM task_events e JOIN tasks t ON t.id = e.task_id "
        "WHERE e.kind = 'state_change' AND t.workflow_id = $1 "
        "AND ($2::text IS NULL OR e.data->>'to' = $2)",
        uuid.UUID(workflow_id),
        state,
    )
    return {(r["task_id"], r["sequence"]): r["to_state"] for r in rows}


def assert_feed(feed: Feed, expected: dict[tuple[str, int], str], workflow_id: str) -> None:
    keys = feed.keys()
    assert len(keys) == len(set(keys)), "no change twice"
    missing, extra = set(expected) - set(keys), set(keys) - set(expected)
    assert not missing and not extra, f"missing {sorted(missing)[:5]}, extra {sorted(extra)[:5]}"
    by_task: dict[str, list[int]] = {}
    for change in feed.changes:
        assert change.workflow_id == workflow_id
        assert (
            S.TaskState.Name(change.event.state_change.to_state).removeprefix("TASK_STATE_")
            == expected[(change.event.task_id, change.event.sequence)]
        )
        by_task.setdefault(change.event.task_id, []).append(change.event.sequence)
    for task_id, sequences in by_task.items():
        assert sequences == sorted(sequences), f"task {task_id}: changes out of order"


async def test_watch_tasks_resumed_from_cursors_misses_nothing(
    stubs: Stubs, fake: FakeSources, workers: WorkerProcess, pg: asyncpg.Connection
) -> None:
    wf_a, wf_b = await langflow_workflows(stubs, fake)
    all_a = Feed(stubs.tasks, ts.TaskFilter(workflow_id=wf_a), cut_every=23)
    done_a = Feed(
        stubs.tasks,
        ts.TaskFilter(workflow_id=wf_a, states=[S.TASK_STATE_SUCCEEDED]),
        cut_every=7,
    )
    all_b = Feed(stubs.tasks, ts.TaskFilter(workflow_id=wf_b), cut_every=5)
    feeds = (all_a, done_a, all_b)
    try:
        # A marker task per workflow shows each feed is open (it started reading before them).
        marker_a = await run_task(stubs, wf_a, "marker a")
        marker_b = await run_task(stubs, wf_b, "marker b")
        await wait_until(lambda: bool(all_a.of(marker_a) and all_b.of(marker_b)))
        await wait_until(lambda: done_a.ended({marker_a}))
        first_a = all_a.of(marker_a)[0].event.sequence
        first_b = all_b.of(marker_b)[0].event.sequence

        # ~50 tasks of A (single runs racing a batch) and 10 of B, while the feeds read.
        singles = [
            stubs.workflows.RunWorkflow(
                ws.RunWorkflowRequest(workflow_id=wf_a, input_value=f"s{i}")
            )
            for i in range(25)
        ]
        others = [
            stubs.workflows.RunWorkflow(
                ws.RunWorkflowRequest(workflow_id=wf_b, input_value=f"b{i}")
            )
            for i in range(10)
        ]
        batch = stubs.workflows.BatchRunWorkflows(
            ws.BatchRunWorkflowsRequest(
                requests=[
                    ws.RunWorkflowRequest(workflow_id=wf_a, input_value=f"n{i}") for i in range(25)
                ]
            )
        )
        batch_response, *responses = await asyncio.gather(batch, *singles, *others)
        ids_a = (
            {t.id for t in batch_response.tasks} | {r.task.id for r in responses[:25]} | {marker_a}
        )
        ids_b = {r.task.id for r in responses[25:]} | {marker_b}
        assert len(ids_a) == 51 and len(ids_b) == 11

        await wait_until(lambda: all_a.ended(ids_a) and all_b.ended(ids_b), timeout=60)
        await wait_until(lambda: done_a.ended(ids_a, {S.TASK_STATE_SUCCEEDED}))
        for feed in feeds:
            feed.check()
    finally:
        for feed in feeds:
            feed.task.cancel()
        await asyncio.gather(*(feed.task for feed in feeds), return_exceptions=True)

    expected_a = {
        key: to
        for key, to in (await db_changes(pg, wf_a)).items()
        if key[0] != marker_a or key[1] >= first_a
    }
    expected_b = {
        key: to
        for key, to in (await db_changes(pg, wf_b)).items()
        if key[0] != marker_b or key[1] >= first_b
    }
    assert len(expected_a) >= 51 * 3, "PENDING, (QUEUED,) RUNNING, SUCCEEDED per task"
    assert_feed(all_a, expected_a, wf_a)
    assert_feed(all_b, expected_b, wf_b)
    assert_feed(done_a, await db_changes(pg, wf_a, "SUCCEEDED"), wf_a)
    assert all_a.calls > 5 and done_a.calls > 5 and all_b.calls > 2, "they resumed"


# -- 4. many watchers --------------------------------------------------------------------------


async def test_100_watchers_on_one_task_and_100_on_100_tasks(
    stubs: Stubs, fake: FakeSources, workers: WorkerProcess
) -> None:
    workflow_id = await echo_workflow(stubs, fake)
    fake.state.configure("langflow", delay_s=0.3)
    one = await run_task(stubs, workflow_id, words(60))
    on_one = [Watch(stubs.tasks, one) for _ in range(100)]
    fake.state.configure("langflow", delay_s=0)
    batch = await stubs.workflows.BatchRunWorkflows(
        ws.BatchRunWorkflowsRequest(
            requests=[
                ws.RunWorkflowRequest(workflow_id=workflow_id, input_value=words(3 + i % 5))
                for i in range(100)
            ]
        )
    )
    many = [(t.id, Watch(stubs.tasks, t.id)) for t in batch.tasks]
    await assert_full_log(stubs.tasks, one, await finish(on_one))
    assert all(w.code == grpc.StatusCode.OK for w in on_one)
    streams = await finish([watch for _, watch in many], timeout=90)
    for (task_id, watch), events in zip(many, streams, strict=True):
        await assert_full_log(stubs.tasks, task_id, [events])
        assert watch.code == grpc.StatusCode.OK


# -- 5. a slow consumer ------------------------------------------------------------------------


async def test_slow_consumer_gets_everything_and_does_not_hold_up_a_fast_one(
    stubs: Stubs, fake: FakeSources, workers: WorkerProcess
) -> None:
    workflow_id = await echo_workflow(stubs, fake)
    fake.state.configure("langflow", delay_s=0.3)
    # 250 tokens of ~1 KB: more than the transport buffers while the slow reader naps.
    task_id = await run_task(stubs, workflow_id, words(250, width=1000))
    slow = Watch(stubs.tasks, task_id, pause_s=0.008)
    fast = Watch(stubs.tasks, task_id)
    fast_events = await fast.done()
    slow_when_fast_ended = len(slow.events)
    slow_events = await slow.done()
    assert fast.code == grpc.StatusCode.OK and slow.code == grpc.StatusCode.OK, slow.error
    log = await assert_full_log(stubs.tasks, task_id, [fast_events, slow_events])
    assert slow_when_fast_ended < len(log), "the fast watcher finished while the slow one lagged"


# -- 6. open / cancel cycles leak nothing ------------------------------------------------------


class InProcessServer:
    """A server in this event loop (so its hub and tasks can be counted) and a stub on it."""

    def __init__(self, spark: SparkServer, channel: grpc.aio.Channel) -> None:
        self.spark = spark
        self.stub = task_service_pb2_grpc.TaskServiceStub(channel)
        self._stopped = False

    async def stop(self, grace: float) -> None:
        if not self._stopped:
            self._stopped = True
            await self.spark.stop(grace)


@contextlib.asynccontextmanager
async def in_process_server(
    server_env: dict[str, str], **overrides: Any
) -> AsyncIterator[InProcessServer]:
    """Settings as the server processes get them (``server_env``), on 127.0.0.1:0."""
    values: dict[str, Any] = {k.removeprefix("SPARK_").lower(): v for k, v in server_env.items()}
    settings = Settings(**{**values, "listen_address": "127.0.0.1:0", **overrides})
    spark = build_server(settings, build_deps(settings, settings.database_url))
    await spark.start()
    server: InProcessServer | None = None
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{spark.port}") as channel:
            server = InProcessServer(spark, channel)
            yield server
    finally:
        await (server.stop(1) if server is not None else spark.stop(1))


async def test_1000_open_cancel_cycles_leak_no_subscription_or_task(
    stubs: Stubs, fake: FakeSources, workers: WorkerProcess, server_env: dict[str, str]
) -> None:
    workflow_id = await echo_workflow(stubs, fake)
    fake.state.configure("langflow", hang=True)
    task_id = await run_task(stubs, workflow_id)
    try:
        await wait_state(stubs.tasks, task_id, {S.TASK_STATE_RUNNING})
        replay = len(await persisted_log(stubs.tasks, task_id))
        async with in_process_server(server_env) as server:
            spark, stub = server.spark, server.stub
            peak = 0

            async def cycle(i: int) -> None:
                nonlocal peak
                kind = i % 5
                if kind == 4:
                    call: Any = stub.WatchTasks(ts.WatchTasksRequest())
                else:
                    call = stub.WatchTask(ts.WatchTaskRequest(task_id=task_id))
                # Hang up at once, mid-replay, once live, once the server answered.
                want = (0, 1, replay, 0, 0)[kind]
                if kind == 3:
                    await call.wait_for_connection()
                got = 0
                while got < want:
                    got += (await call.read()).HasField("event")
                peak = max(peak, len(spark.hub.subscriptions()))
                call.cancel()

            def settled(baseline: int) -> bool:
                return not spark.hub.subscriptions() and len(asyncio.all_tasks()) <= baseline

            await asyncio.gather(*(cycle(i) for i in range(20)))  # warm up the channel
            await wait_until(lambda: not spark.hub.subscriptions(), timeout=10)
            await asyncio.sleep(0.2)
            tasks_before = len(asyncio.all_tasks())
            for start in range(0, 1000, 25):
                await asyncio.gather(*(cycle(i) for i in range(start, start + 25)))
            # Deadlines end streams too, and must release them the same way.
            deadlines = [Watch(stub, task_id, timeout=0.3) for _ in range(10)]
            for watch in deadlines:
                await watch.done()
                assert watch.code == grpc.StatusCode.DEADLINE_EXCEEDED, watch.error
            assert peak > 0, "the cycles really held subscriptions"
            try:
                await wait_until(lambda: settled(tasks_before), timeout=10)
            except TimeoutError:
                pytest.fail(
                    f"left behind: {len(spark.hub.subscriptions())} subscriptions, "
                    f"{len(asyncio.all_tasks())} tasks (started with {tasks_before})"
                )
    finally:
        await stubs.tasks.CancelTask(ts.CancelTaskRequest(id=task_id))


# -- 7. two server processes -------------------------------------------------------------------


async def test_watchers_on_two_servers_see_every_event(
    stubs: Stubs,
    fake: FakeSources,
    workers: WorkerProcess,
    server_env: dict[str, str],
    tmp_path: Path,
) -> None:
    second = await asyncio.to_thread(start_server_process, server_env, tmp_path)
    try:
        async with grpc.aio.insecure_channel(second.address) as channel:
            other = task_service_pb2_grpc.TaskServiceStub(channel)
            workflow_id = await echo_workflow(stubs, fake)
            fake.state.configure("langflow", delay_s=0.3)
            task_ids = [await run_task(stubs, workflow_id, words(100)) for _ in range(2)]
            watches = {
                task_id: [Watch(stub, task_id) for stub in (stubs.tasks, other) for _ in range(3)]
                for task_id in task_ids
            }
            for task_id, group in watches.items():
                await assert_full_log(stubs.tasks, task_id, await finish(group))
                assert all(w.code == grpc.StatusCode.OK for w in group)
    finally:
        assert await asyncio.to_thread(second.stop) == 0, second.log()[-3000:]


# -- 8. Redis restarted under open streams -----------------------------------------------------


async def test_streams_survive_a_redis_restart(
    stubs: Stubs,
    fake: FakeSources,
    workers: WorkerProcess,
    server: ServerProcess,
    stack: EmbeddedStack | None,
    fault_report: list[str],
) -> None:
    """The watchers run in a child process: restarting the embedded Redis forks this one,
    and a fork while this process has gRPC calls in flight can crash the child (see
    start_redis_again)."""
    if stack is None:
        pytest.skip("needs the embedded Redis, to kill and restart it")
    workflow_id = await echo_workflow(stubs, fake)
    fake.state.configure("langflow", delay_s=2.0)
    task_ids = [await run_task(stubs, workflow_id, words(40)) for _ in range(3)]
    watchers = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        WATCHER_SCRIPT,
        server.address,
        "3",
        *task_ids,
        stdout=asyncio.subprocess.PIPE,
        limit=1 << 24,  # the results are one long JSON line
    )
    try:
        assert watchers.stdout is not None
        async with asyncio.timeout(30):
            assert await watchers.stdout.readline() == b"ready\n", "every stream is open"
        await wait_state(stubs.tasks, task_ids[0], {S.TASK_STATE_RUNNING})
        await asyncio.to_thread(stack.redis.stop, kill=True)
        try:
            await asyncio.sleep(0.5)  # streams open while nothing is live
        finally:
            await start_redis_again(stack)
        # The tasks are the workers' business: one that stays stuck after the restart is
        # reported and cancelled, and its streams must still end with that terminal event.
        stuck = []
        try:
            await wait_until(lambda: _all_terminal(stubs.tasks, task_ids), timeout=30)
        except TimeoutError:
            for task_id in task_ids:
                if (await get_task(stubs.tasks, task_id)).state not in TERMINAL:
                    stuck.append(task_id)
                    await stubs.tasks.CancelTask(ts.CancelTaskRequest(id=task_id))
            fault_report.append(
                f"Redis restarted under open streams: {len(stuck)} of 3 tasks never finished "
                "(stuck RUNNING on their worker); cancelled, their streams ended CANCELLED"
            )
        try:
            async with asyncio.timeout(60):
                line = await watchers.stdout.readline()
                assert await watchers.wait() == 0, f"the watchers exited {watchers.returncode}"
        except (TimeoutError, AssertionError) as err:
            states = [S.TaskState.Name((await get_task(stubs.tasks, t)).state) for t in task_ids]
            raise AssertionError(f"{err!r}; tasks are {states}") from err
        results = json.loads(line)
    finally:
        if watchers.returncode is None:
            watchers.kill()
            await watchers.wait()
    assert len(results) == 9
    for task_id in task_ids:
        group = [r for r in results if r["task_id"] == task_id]
        assert [r["code"] for r in group] == ["OK"] * 3
        streams = [[S.TaskEvent.FromString(bytes.fromhex(e)) for e in r["events"]] for r in group]
        await assert_full_log(stubs.tasks, task_id, streams)
        want = S.TASK_STATE_CANCELLED if task_id in stuck else S.TASK_STATE_SUCCEEDED
        assert (await get_task(stubs.tasks, task_id)).state == want
    # The workers survived, and live delivery works again.
    assert len(workers.children()) == 2, workers.log()[-3000:]
    fake.state.configure("langflow", delay_s=0.3)
    after = await run_task(stubs, workflow_id, words(30))
    await assert_full_log(stubs.tasks, after, [await watch_all(stubs.tasks, after)])


async def _all_terminal(stub: TaskStub, task_ids: list[str]) -> bool:
    return all([(await get_task(stub, t)).state in TERMINAL for t in task_ids])


#: Opens argv[2] WatchTask streams on each task (argv[3:]) at argv[1]; prints "ready" once
#: each has an event, then, when all have ended, one JSON list: task_id, code, events (hex).
WATCHER_SCRIPT = """
import asyncio, json, sys
import grpc
from spark_grpc._gen.spark.v1 import task_service_pb2 as ts, task_service_pb2_grpc

async def main(address, per_task, task_ids):
    total, started = per_task * len(task_ids), 0
    async with grpc.aio.insecure_channel(address) as channel:
        stub = task_service_pb2_grpc.TaskServiceStub(channel)

        async def watch(task_id):
            nonlocal started
            events, code = [], "OK"
            try:
                async for response in stub.WatchTask(ts.WatchTaskRequest(task_id=task_id)):
                    if response.HasField("event"):
                        if not events:
                            started += 1
                            if started == total:
                                print("ready", flush=True)
                        events.append(response.event.SerializeToString(deterministic=True).hex())
            except grpc.aio.AioRpcError as err:
                code = err.code().name
            return {"task_id": task_id, "code": code, "events": events}

        results = await asyncio.gather(*(watch(t) for t in task_ids for _ in range(per_task)))
    print(json.dumps(results), flush=True)

asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3:]))
"""


async def start_redis_again(stack: EmbeddedStack) -> None:
    """stack.redis.start(), tried up to three times. The launcher forks this process and runs
    Python in the child (preexec_fn); with gRPC calls in flight here, gRPC logs "Other threads
    are currently calling into gRPC, skipping fork() handlers" and the child can die with
    SIGSEGV before it execs redis-server (exit -11, nothing in redis.log)."""
    for attempt in range(3):
        try:
            await asyncio.to_thread(stack.redis.start)
            return
        except EmbeddedError as err:
            if attempt == 2 or "code -11" not in str(err):
                raise


# -- 9. heartbeats, shutdown, deadlines --------------------------------------------------------


async def test_heartbeats_then_sigterm_ends_watch_task_unavailable_with_where_to_resume(
    stubs: Stubs,
    fake: FakeSources,
    workers: WorkerProcess,
    server_env: dict[str, str],
    tmp_path: Path,
) -> None:
    env = {**server_env, "SPARK_STREAM_HEARTBEAT_S": "0.3", "SPARK_GRACE_PERIOD_S": "5"}
    own = await asyncio.to_thread(start_server_process, env, tmp_path)
    workflow_id = await echo_workflow(stubs, fake)
    fake.state.configure("langflow", hang=True)
    task_id = await run_task(stubs, workflow_id)
    try:
        await wait_state(stubs.tasks, task_id, {S.TASK_STATE_RUNNING})
        async with grpc.aio.insecure_channel(own.address) as channel:
            watch = Watch(task_service_pb2_grpc.TaskServiceStub(channel), task_id)
            await wait_until(lambda: watch.heartbeats >= 2, timeout=20)
            log = await persisted_log(stubs.tasks, task_id)
            assert watch.events == log and watch.code is None, "replayed, idle, still open"

            own.process.send_signal(signal.SIGTERM)
            await watch.done(timeout=30)
            assert watch.code == grpc.StatusCode.UNAVAILABLE, watch.error
            assert watch.error is not None
            message = watch.error.details() or ""
            assert f"after_sequence={log[-1].sequence}" in message, message
        assert await asyncio.to_thread(own.process.wait, 30) == 0, own.log()[-3000:]

        # The client resumes where the message says, on another server, to the end.
        resume = re.search(r"after_sequence=(\d+)", message)
        assert resume is not None
        resumed = Watch(stubs.tasks, task_id, after=int(resume.group(1)))
        # A client deadline ends an idle stream with DEADLINE_EXCEEDED, cleanly.
        deadline = Watch(stubs.tasks, task_id, timeout=0.5)
        got = await deadline.done()
        assert got == log[: len(got)], "whatever arrived before the deadline is the log's start"
        assert deadline.code == grpc.StatusCode.DEADLINE_EXCEEDED, deadline.error
        await stubs.tasks.CancelTask(ts.CancelTaskRequest(id=task_id))
        rest = await resumed.done()
        assert resumed.code == grpc.StatusCode.OK
        await assert_full_log(stubs.tasks, task_id, [watch.events + rest])
    finally:
        await asyncio.to_thread(own.stop)
        if (await get_task(stubs.tasks, task_id)).state not in TERMINAL:
            await stubs.tasks.CancelTask(ts.CancelTaskRequest(id=task_id))


async def test_watch_tasks_heartbeats_carry_a_cursor_and_shutdown_says_where_to_resume(
    stubs: Stubs, fake: FakeSources, server_env: dict[str, str]
) -> None:
    workflow_id = await echo_workflow(stubs, fake)
    flt = ts.TaskFilter(workflow_id=workflow_id)
    async with in_process_server(server_env, stream_heartbeat_s=0.3) as server:
        feed = server.stub.WatchTasks(ts.WatchTasksRequest(filter=flt))
        cursors: list[str] = []
        async with asyncio.timeout(20):
            while len(cursors) < 2:
                response = await feed.read()
                assert response.HasField("heartbeat"), "no task of this workflow changed"
                cursors.append(response.cursor)
        assert all(cursors)
        stopping = asyncio.create_task(server.stop(5))
        err = await stream_error(feed)
        await stopping
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert "cursor=" in (err.details() or ""), err.details()
    # The cursor in the message resumes on another server.
    cursor = (err.details() or "").split("cursor=")[-1].split()[0].rstrip(".;,")
    task_id = await run_task(stubs, workflow_id)
    resumed = stubs.tasks.WatchTasks(ts.WatchTasksRequest(filter=flt, cursor=cursor))
    async with asyncio.timeout(20):
        while True:
            response = await resumed.read()
            if response.HasField("change"):
                break
    resumed.cancel()
    assert response.change.event.task_id == task_id and response.change.event.sequence == 1


# -- 10. bad input -----------------------------------------------------------------------------


async def test_bad_requests_are_rejected(
    stubs: Stubs, fake: FakeSources, server_env: dict[str, str]
) -> None:
    tasks = stubs.tasks
    err = await stream_error(tasks.WatchTask(ts.WatchTaskRequest(task_id="not-a-uuid")))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "task_id" in field_violations(err)
    err = await stream_error(tasks.WatchTask(ts.WatchTaskRequest(task_id=str(uuid.uuid4()))))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    workflow_id = await echo_workflow(stubs, fake)
    task_id = await run_task(stubs, workflow_id)
    request = ts.WatchTaskRequest(task_id=task_id, after_sequence=-1)
    err = await stream_error(tasks.WatchTask(request))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "after_sequence" in field_violations(err)

    flt = ts.TaskFilter(workflow_id=workflow_id)
    bad_filter = ts.TaskFilter(workflow_id="nope", states=[99])
    err = await stream_error(tasks.WatchTasks(ts.WatchTasksRequest(filter=bad_filter)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert {"filter.workflow_id", "filter.states[0]"} <= set(field_violations(err))

    # A cursor as the server makes them (signed with its key) for this filter ...
    tokens = PageTokens(SecretBox(server_env["SPARK_ENCRYPTION_KEYS"].split(",")))
    filters = {"workflow_id": workflow_id, "schedule_id": "", "states": []}
    cursor = tokens.encode("feed", filters, [1, str(uuid.uuid4()), 0])
    altered = cursor[:-6] + ("AAAAAA" if not cursor.endswith("AAAAAA") else "BBBBBB")
    other_states = ts.TaskFilter(workflow_id=workflow_id, states=[S.TASK_STATE_FAILED])
    # ... is refused forged, altered, with other filters, or from another list.
    for bad in (
        ts.WatchTasksRequest(filter=flt, cursor="forged"),
        ts.WatchTasksRequest(filter=flt, cursor=altered),
        ts.WatchTasksRequest(filter=ts.TaskFilter(), cursor=cursor),
        ts.WatchTasksRequest(filter=other_states, cursor=cursor),
        ts.WatchTasksRequest(
            filter=flt, cursor=tokens.encode("task_events", filters, [1, str(uuid.uuid4()), 0])
        ),
    ):
        err = await stream_error(tasks.WatchTasks(bad))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "cursor" in field_violations(err)
    # Signed with the server's key, right filter, but no position: refused, not a crash.
    for position in ([1, "not-a-uuid", 0], ["1", str(uuid.uuid4()), 0], [1, 2]):
        forged = tokens.encode("feed", filters, position)
        err = await stream_error(tasks.WatchTasks(ts.WatchTasksRequest(filter=flt, cursor=forged)))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
        assert "cursor" in field_violations(err)
