"""Following a task, or all tasks, across dropped connections.

WatchTask sends a task's events in order, then live until its terminal event, and ends OK
after it; WatchTasks is an endless feed of state changes, each message with a cursor. A
connection can drop (a proxy, a deploy: a server shutting down ends its streams with
UNAVAILABLE): these generators reconnect and resume after the last sequence / cursor they
saw, so the caller sees every event exactly once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing

from ._gen.spark import v1
from .client import SparkClient
from .retry import DEFAULT_BACKOFF, Backoff, is_transient

__all__ = ["TERMINAL_STATES", "watch_task", "watch_tasks"]

TERMINAL_STATES = frozenset(
    {v1.TaskState.SUCCEEDED, v1.TaskState.FAILED, v1.TaskState.CANCELLED, v1.TaskState.TIMED_OUT}
)


async def watch_task(
    client: SparkClient,
    task_id: str,
    after_sequence: int = 0,
    *,
    backoff: Backoff = DEFAULT_BACKOFF,
) -> AsyncIterator[v1.TaskEvent]:
    """Every event of ``task_id`` after ``after_sequence``, up to and including its terminal
    event. On UNAVAILABLE or a lost connection it reconnects with ``after_sequence`` = the
    last sequence received; ``backoff.attempts`` failures in a row without an event give up
    (the last error is raised). Heartbeats are not yielded."""
    failures = 0
    while True:
        request = v1.WatchTaskRequest(task_id=task_id, after_sequence=after_sequence)
        try:
            async with aclosing(client.streams.watch_task(request)) as stream:
                async for message in stream:
                    if message.event is not None:
                        failures = 0
                        after_sequence = message.event.sequence
                        yield message.event
            return  # the server ends the stream OK after the terminal event
        except Exception as err:
            failures += 1
            if failures >= backoff.attempts or not is_transient(err):
                raise
        await asyncio.sleep(backoff.delay(failures))


async def watch_tasks(
    client: SparkClient,
    task_filter: v1.TaskFilter | None = None,
    cursor: str = "",
    *,
    backoff: Backoff = DEFAULT_BACKOFF,
) -> AsyncIterator[v1.WatchTasksResponse]:
    """State changes of the tasks ``task_filter`` matches, after ``cursor`` (empty: from now
    on), without end. Each message yielded has its ``change`` and the ``cursor`` to resume
    after it (persist it to continue after a restart). Reconnects like :func:`watch_task`,
    with the last cursor received (heartbeats move it too, and are not yielded). With an
    empty ``cursor``, a drop before the first message resumes from "now" again."""
    failures = 0
    while True:
        request = v1.WatchTasksRequest(filter=task_filter, cursor=cursor)
        try:
            async with aclosing(client.streams.watch_tasks(request)) as stream:
                async for message in stream:
                    failures = 0
                    cursor = message.cursor or cursor
                    if message.change is not None:
                        yield message
            return
        except Exception as err:
            failures += 1
            if failures >= backoff.attempts or not is_transient(err):
                raise
        await asyncio.sleep(backoff.delay(failures))
