"""``spark tasks``: list, show, watch, cancel, retry and read the log of tasks; and the
live display that ``tasks watch`` and ``workflows run --watch`` share."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from typing import Any

import betterproto2
import grpc
import typer
from rich.console import Group
from rich.live import Live
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from .. import v1
from ..client import SparkSyncClient
from ..retry import is_transient
from ..watch import TERMINAL_STATES
from ._base import (
    EXIT_TASK_FAILED,
    EXIT_USAGE,
    all_pages,
    connected,
    console,
    emit_json,
    enum_name,
    fail,
    print_table,
    settings_of,
    show_message,
    tasks_app,
    when,
    write_line,
)


def _task_state(name: str) -> v1.TaskState:
    try:
        return v1.TaskState[name.upper().removeprefix("TASK_STATE_")]
    except KeyError:
        raise fail(f"error: INVALID_ARGUMENT: unknown task state {name!r}", EXIT_USAGE) from None


@tasks_app.command("list")
def tasks_list(
    ctx: typer.Context,
    workflow_id: str = typer.Option("", "--workflow"),
    schedule_id: str = typer.Option("", "--schedule"),
    state: list[str] = typer.Option([], "--state", help="e.g. FAILED (repeatable)."),  # noqa: B008
    limit: int = typer.Option(50, "--limit"),
) -> None:
    """List tasks, newest first."""
    states = [_task_state(s) for s in state]
    with connected(ctx) as spark:

        def fetch(token: str) -> tuple[list[Any], str]:
            page = spark.tasks.list_tasks(
                v1.ListTasksRequest(
                    page_token=token,
                    page_size=min(limit, 1000),
                    workflow_id=workflow_id,
                    schedule_id=schedule_id,
                    states=states,
                )
            )
            return page.tasks, page.next_page_token

        tasks = all_pages(fetch, limit)
    if settings_of(ctx).json:
        emit_json(tasks)
        return
    print_table(
        "Tasks",
        ("id", "workflow", "state", "attempt", "created", "finished"),
        [
            (
                t.id,
                t.workflow_id,
                enum_name(t.state),
                f"{t.attempt}/{t.max_attempts}",
                when(t.create_time),
                when(t.finish_time),
            )
            for t in tasks
        ],
    )


@tasks_app.command("show")
def tasks_show(ctx: typer.Context, task_id: str) -> None:
    """Show a task."""
    with connected(ctx) as spark:
        task = spark.tasks.get_task(v1.GetTaskRequest(id=task_id)).task
    show_message(ctx, task, "Task")


@tasks_app.command("watch")
def tasks_watch(ctx: typer.Context, task_id: str) -> None:
    """Follow a task to its end with a live display; print its answer."""
    with connected(ctx) as spark:
        follow_task(ctx, spark, task_id)


@tasks_app.command("cancel")
def tasks_cancel(
    ctx: typer.Context, task_id: str, reason: str = typer.Option("", "--reason")
) -> None:
    """Cancel a task."""
    with connected(ctx) as spark:
        task = spark.tasks.cancel_task(v1.CancelTaskRequest(id=task_id, reason=reason)).task
    if settings_of(ctx).json:
        emit_json(task)
    elif task is not None:
        console().print(f"task {task.id} {enum_name(task.state)}")


@tasks_app.command("retry")
def tasks_retry(ctx: typer.Context, task_id: str) -> None:
    """Run a failed, timed out or cancelled task again."""
    with connected(ctx) as spark:
        task = spark.tasks.retry_task(v1.RetryTaskRequest(id=task_id)).task
    if settings_of(ctx).json:
        emit_json(task)
    elif task is not None:
        console().print(f"task {task.id} {enum_name(task.state)}")


def _describe(event: v1.TaskEvent) -> str:
    kind, value = betterproto2.which_one_of(event, "kind")
    if isinstance(value, v1.TaskStateChange):
        change = f"{enum_name(value.from_state)} -> {enum_name(value.to_state)}"
        text = f"{change} (attempt {value.attempt})"
        if value.error is not None:
            text += f": {value.error.kind}: {value.error.message}"
        return text
    if isinstance(value, v1.TaskProgress):
        return f"{value.fraction:.0%} {value.message}"
    if isinstance(value, v1.TaskLogLine):
        return f"{enum_name(value.level)} {value.message}"
    if isinstance(value, v1.TaskOutputChunk):
        return value.text
    return kind


@tasks_app.command("logs")
def tasks_logs(ctx: typer.Context, task_id: str) -> None:
    """Print a task's event log."""
    with connected(ctx) as spark:

        def fetch(token: str) -> tuple[list[Any], str]:
            page = spark.tasks.list_task_events(
                v1.ListTaskEventsRequest(task_id=task_id, page_size=1000, page_token=token)
            )
            return page.events, page.next_page_token

        events = all_pages(fetch, sys.maxsize)
    if settings_of(ctx).json:
        emit_json(events)
        return
    print_table(
        "Events",
        ("seq", "time", "kind", "detail"),
        [
            (e.sequence, when(e.event_time), betterproto2.which_one_of(e, "kind")[0], _describe(e))
            for e in events
        ],
    )


def _events(spark: SparkSyncClient, task_id: str) -> Iterator[v1.TaskEvent]:
    """WatchTask, resumed after the last sequence seen when the connection drops."""
    after, failures = 0, 0
    while True:
        try:
            for message in spark.tasks.watch_task(
                v1.WatchTaskRequest(task_id=task_id, after_sequence=after)
            ):
                if message.event is not None:
                    failures, after = 0, message.event.sequence
                    yield message.event
            return
        except grpc.RpcError as err:
            failures += 1
            if failures >= 5 or not is_transient(err):
                raise
        time.sleep(min(0.2 * 2**failures, 5.0))


def follow_task(ctx: typer.Context, spark: SparkSyncClient, task_id: str) -> None:
    """Follows ``task_id`` (a live progress display unless --json), prints the answer and
    exits 1 unless it SUCCEEDED."""
    settings = settings_of(ctx)
    if settings.json:
        for _ in _events(spark, task_id):
            pass
    else:
        progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(),
        )
        bar = progress.add_task(f"task {task_id} ...", total=1.0)
        streamed = Text()
        log: list[str] = []
        out = console()
        with Live(Group(progress, streamed), console=out, refresh_per_second=10) as live:
            for event in _events(spark, task_id):
                change = event.state_change
                if change is not None:
                    state = change.to_state
                    done = state in TERMINAL_STATES
                    progress.update(
                        bar,
                        description=f"task {task_id} {enum_name(state)}",
                        completed=1.0 if done else None,
                    )
                    log.append(f"#{event.sequence} {_describe(event)}")
                elif event.progress is not None:
                    progress.update(bar, completed=event.progress.fraction)
                    log.append(f"#{event.sequence} {_describe(event)}")
                elif event.log is not None:
                    log.append(f"#{event.sequence} {_describe(event)}")
                elif event.output_chunk is not None:
                    chunk = event.output_chunk
                    if chunk.source_event == "token":
                        streamed.append(chunk.text)
                    elif chunk.source_event != "output":  # a whole message replaces tokens
                        streamed = Text(chunk.text)
                live.update(Group(progress, Text("\n".join(log[-8:]), style="dim"), streamed))
        if not out.is_terminal:
            out.line()  # the last frame, printed once, ends without a newline
    task = spark.tasks.get_task(v1.GetTaskRequest(id=task_id)).task
    assert task is not None
    if settings.json:
        emit_json(task)
    else:
        write_line(task.output_text)
    if task.state != v1.TaskState.SUCCEEDED:
        error = task.error
        why = f": {error.kind}: {error.message}" if error is not None else ""
        raise fail(f"task {task.id} {enum_name(task.state)}{why}", EXIT_TASK_FAILED)
