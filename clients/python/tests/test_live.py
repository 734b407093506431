"""The client against a live server (started by tests/e2e/test_client_python.py).

Environment: SPARK_ADDRESS (a server in open mode), SPARK_DEMO_SOURCE_URL (a LangFlow),
SPARK_SLOW_SOURCE_URL (a LangFlow that answers each request after about a second),
SPARK_SECURED_ADDRESS + SPARK_SECURED_TLS_CA + SPARK_SECURED_API_KEY (a server with TLS
and API keys required). Tests whose variables are missing skip.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import grpc
import pytest
from grpclib.exceptions import GRPCError

from spark_client import (
    SparkClient,
    Tls,
    code_name,
    connect,
    connect_sync,
    error_info,
    field_violations,
    run_workflow_idempotent,
    run_workflow_idempotent_sync,
    v1,
    watch_task,
    watch_tasks,
)

ECHO_FLOW_ID = "8f14e45f-ceea-467f-a5b8-1c2d3e4f5a01"
MISSING = "123e4567-e89b-12d3-a456-426614174000"
T = TypeVar("T")


def arun(coro: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, with a bound: a hang fails with the traceback of where it hung."""
    return asyncio.run(asyncio.wait_for(coro, 45))


def env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.skip(f"{name} is not set (tests/e2e/test_client_python.py sets it)")
    return value


async def echo_workflow(spark: SparkClient, url: str) -> v1.Workflow:
    """The echo flow of the LangFlow at ``url``, imported (source found or created)."""
    try:
        created = await spark.sources.create_source(
            v1.CreateSourceRequest(
                source=v1.Source(display_name=url, type=v1.SourceType.LANGFLOW, url=url),
                request_id=str(uuid.uuid4()),
            )
        )
        assert created.source is not None
        source = created.source
    except GRPCError as err:
        assert code_name(err) == "ALREADY_EXISTS", err
        listed = await spark.sources.list_sources(v1.ListSourcesRequest(page_size=1000))
        source = next(s for s in listed.sources if s.url == url)
    imported = await spark.workflows.import_workflow(
        v1.ImportWorkflowRequest(source_id=source.id, remote_flow_id=ECHO_FLOW_ID)
    )
    assert imported.workflow is not None
    return imported.workflow


async def all_events(spark: SparkClient, task_id: str) -> list[v1.TaskEvent]:
    events: list[v1.TaskEvent] = []
    request = v1.ListTaskEventsRequest(task_id=task_id, page_size=1000)
    while True:
        page = await spark.tasks.list_task_events(request)
        events.extend(page.events)
        if not page.next_page_token:
            return events
        request.page_token = page.next_page_token


def raises_async(call: Callable[[], Awaitable[object]], code: str) -> BaseException:
    async def run() -> BaseException:
        try:
            await call()
        except (GRPCError, TimeoutError) as err:
            return err
        raise AssertionError(f"expected {code}")

    err = arun(run())
    assert code_name(err) == code, err
    return err


def raises_sync(call: Callable[[], object], code: str) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    assert code_name(caught.value) == code, caught.value
    return caught.value


# --- errors -------------------------------------------------------------------------------


def test_not_found_async_and_sync() -> None:
    address = env("SPARK_ADDRESS")

    async def get() -> None:
        async with connect(address) as spark:
            await spark.workflows.get_workflow(v1.GetWorkflowRequest(id=MISSING))

    err = raises_async(get, "NOT_FOUND")
    info = error_info(err)
    assert info is not None
    assert (info.reason, info.domain) == ("WORKFLOW_NOT_FOUND", "spark.automagik.dev")
    with connect_sync(address) as spark:
        err = raises_sync(
            lambda: spark.workflows.get_workflow(v1.GetWorkflowRequest(id=MISSING)), "NOT_FOUND"
        )
    assert (info := error_info(err)) is not None and info.reason == "WORKFLOW_NOT_FOUND"


def test_invalid_argument_carries_field_violations() -> None:
    address = env("SPARK_ADDRESS")

    async def get() -> None:
        async with connect(address) as spark:
            await spark.workflows.get_workflow(v1.GetWorkflowRequest(id="not-a-uuid"))

    err = raises_async(get, "INVALID_ARGUMENT")
    violations = field_violations(err)
    assert [v.field for v in violations] == ["id"]
    assert "UUID" in violations[0].description
    assert (info := error_info(err)) is not None and info.reason == "INVALID_ARGUMENT"

    with connect_sync(address) as spark:
        request = v1.RunWorkflowRequest(workflow_id="nope", request_id="x" * 300)
        err = raises_sync(lambda: spark.workflows.run_workflow(request), "INVALID_ARGUMENT")
    fields = {v.field for v in field_violations(err)}
    assert {"workflow_id", "request_id"} <= fields, fields


def test_unauthenticated_without_a_key_and_ok_with_one_over_tls() -> None:
    address, ca = env("SPARK_SECURED_ADDRESS"), env("SPARK_SECURED_TLS_CA")
    key, tls = env("SPARK_SECURED_API_KEY"), Tls(ca_file=ca)
    request = v1.ListSourcesRequest(page_size=1)

    async def without_key() -> None:
        async with connect(address, tls=tls) as spark:
            await spark.sources.list_sources(request)

    err = raises_async(without_key, "UNAUTHENTICATED")
    assert error_info(err) is not None

    async def with_key() -> None:
        async with connect(address, tls=tls, api_key=key) as spark:
            await spark.sources.list_sources(request)

    arun(with_key())
    with connect_sync(address, tls=tls) as spark:
        raises_sync(lambda: spark.sources.list_sources(request), "UNAUTHENTICATED")
    with connect_sync(address, tls=tls, api_key=key) as spark:
        spark.sources.list_sources(request)


def test_deadline_exceeded() -> None:
    address, slow = env("SPARK_ADDRESS"), env("SPARK_SLOW_SOURCE_URL")
    # ListRemoteFlows asks the source, which takes a second to answer.

    async def list_flows() -> None:
        async with connect(address) as spark:
            source_id = (await echo_workflow(spark, slow)).source_id
            await spark.sources.list_remote_flows(
                v1.ListRemoteFlowsRequest(source_id=source_id), timeout=0.3
            )

    raises_async(list_flows, "DEADLINE_EXCEEDED")

    async def source_id() -> str:
        async with connect(address) as spark:
            return (await echo_workflow(spark, slow)).source_id

    request = v1.ListRemoteFlowsRequest(source_id=arun(source_id()))
    with connect_sync(address, default_timeout=0.3) as spark:
        raises_sync(lambda: spark.sources.list_remote_flows(request), "DEADLINE_EXCEEDED")


# --- runs and streams ---------------------------------------------------------------------


def test_run_workflow_idempotent_makes_one_task_per_request_id() -> None:
    address, url = env("SPARK_ADDRESS"), env("SPARK_DEMO_SOURCE_URL")

    async def run() -> tuple[str, v1.RunWorkflowRequest]:
        async with connect(address) as spark:
            workflow = await echo_workflow(spark, url)
            request = v1.RunWorkflowRequest(workflow_id=workflow.id, request_id=str(uuid.uuid4()))
            first = await run_workflow_idempotent(spark.workflows, request)
            again = await run_workflow_idempotent(spark.workflows, request)
            assert first.id == again.id
            events = [e async for e in watch_task(spark, first.id)]
            assert events[-1].state_change is not None
            assert events[-1].state_change.to_state == v1.TaskState.SUCCEEDED
            return first.id, request

    task_id, request = arun(run())
    with connect_sync(address) as spark:
        assert run_workflow_idempotent_sync(spark.workflows, request).id == task_id
        fresh = run_workflow_idempotent_sync(
            spark.workflows, v1.RunWorkflowRequest(workflow_id=request.workflow_id)
        )
        assert fresh.id != task_id


class Proxy:
    """A TCP proxy to the server whose connections can be cut, as a network would."""

    def __init__(self, target: str) -> None:
        host, _, port = target.rpartition(":")
        self.target = (host, int(port))
        self.connections = 0
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()

    @asynccontextmanager
    async def serve(self) -> AsyncIterator[str]:
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        try:
            yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
        finally:
            server.close()
            self.cut()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await server.wait_closed()

    def cut(self) -> None:
        """Drops every open connection (a reset, not a goodbye)."""
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass
            finally:
                dst.transport.abort()

        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            self._tasks.discard(task)  # type: ignore[arg-type]


async def state_changes(spark: SparkClient, task_id: str) -> list[tuple[int, v1.TaskState]]:
    return [
        (e.sequence, e.state_change.to_state)
        for e in await all_events(spark, task_id)
        if e.state_change is not None
    ]


def test_watch_task_resumes_after_a_cut_connection() -> None:
    address, url = env("SPARK_ADDRESS"), env("SPARK_DEMO_SOURCE_URL")

    async def run() -> None:
        proxy = Proxy(address)
        async with proxy.serve() as via, connect(via) as spark:
            workflow = await echo_workflow(spark, url)
            request = v1.RunWorkflowRequest(workflow_id=workflow.id, input_value="one two three")
            task = await run_workflow_idempotent(spark.workflows, request)
            before = proxy.connections
            seen: list[v1.TaskEvent] = []
            async for event in watch_task(spark, task.id):
                seen.append(event)
                if len(seen) == 2:  # mid-stream: the rest comes after a reconnect
                    proxy.cut()
            assert proxy.connections > before, "the stream never reconnected"
            sequences = [e.sequence for e in seen]
            assert sequences == sorted(set(sequences)), sequences
            assert sequences == [e.sequence for e in await all_events(spark, task.id)]
            last = seen[-1].state_change
            assert last is not None and last.to_state == v1.TaskState.SUCCEEDED

            # A consumer that stops (cancelling its call) resumes from its last sequence.
            resumed = [e async for e in watch_task(spark, task.id, after_sequence=sequences[2])]
            assert [e.sequence for e in resumed] == sequences[3:]

    arun(run())


def test_watch_tasks_resumes_from_its_cursor_after_a_cut_connection() -> None:
    address, url = env("SPARK_ADDRESS"), env("SPARK_DEMO_SOURCE_URL")

    async def run() -> None:
        proxy = Proxy(address)
        async with proxy.serve() as via, connect(via) as spark:
            workflow = await echo_workflow(spark, url)
            seen: dict[str, list[tuple[int, v1.TaskState]]] = {}
            cursors: list[str] = []
            done: dict[str, asyncio.Event] = {}
            warm_up: set[str] = set()  # tasks run before the cut
            cut: list[str] = []

            async def follow() -> None:
                feed = v1.TaskFilter(workflow_id=workflow.id)
                async for message in watch_tasks(spark, feed):
                    assert message.change is not None and message.change.event is not None
                    event = message.change.event
                    assert event.state_change is not None
                    changes = seen.setdefault(event.task_id, [])
                    changes.append((event.sequence, event.state_change.to_state))
                    cursors.append(message.cursor)
                    if warm_up and event.task_id not in warm_up and not cut:
                        cut.append(event.task_id)
                        proxy.cut()  # mid-run: the rest comes after a reconnect
                    if event.state_change.to_state == v1.TaskState.SUCCEEDED:
                        done.setdefault(event.task_id, asyncio.Event()).set()

            follower = asyncio.create_task(follow())

            async def run_to_the_end() -> str:
                request = v1.RunWorkflowRequest(workflow_id=workflow.id)
                task_id = (await run_workflow_idempotent(spark.workflows, request)).id
                ended = asyncio.ensure_future(done.setdefault(task_id, asyncio.Event()).wait())
                await asyncio.wait({ended, follower}, timeout=30, return_when="FIRST_COMPLETED")
                ended.cancel()
                if follower.done():
                    follower.result()  # raises what stopped the feed
                assert done[task_id].is_set(), f"no SUCCEEDED for {task_id}: {seen.get(task_id)}"
                return task_id

            try:
                # The feed starts "now": a first task, seen to its end, shows it is open.
                warm_up.add(await run_to_the_end())
                before = proxy.connections
                task_id = await run_to_the_end()
            finally:
                follower.cancel()
                await asyncio.gather(follower, return_exceptions=True)
            assert cut == [task_id] and proxy.connections > before, "the feed never reconnected"
            assert seen[task_id] == await state_changes(spark, task_id)
            assert len(set(cursors)) == len(cursors)

    arun(run())


def test_sync_stream_and_idempotent_reads() -> None:
    address, url = env("SPARK_ADDRESS"), env("SPARK_DEMO_SOURCE_URL")

    async def workflow_id() -> str:
        async with connect(address) as spark:
            return (await echo_workflow(spark, url)).id

    wf = arun(workflow_id())
    with connect_sync(address) as spark:
        task = run_workflow_idempotent_sync(
            spark.workflows, v1.RunWorkflowRequest(workflow_id=wf, input_value="sync")
        )
        events = [
            m.event
            for m in spark.tasks.watch_task(v1.WatchTaskRequest(task_id=task.id))
            if m.event is not None
        ]
        assert events[-1].state_change is not None
        assert events[-1].state_change.to_state == v1.TaskState.SUCCEEDED
        got = spark.tasks.get_task(v1.GetTaskRequest(id=task.id)).task
        assert got is not None and got.output_text == "sync"
