"""``spark``: the command line over the sync client (Typer + Rich).

Every command talks to the server over gRPC, so it works against a remote deployment.
Lists are tables (``--json``: a JSON array); errors are one line on stderr,
``error: <STATUS_CODE>: <message>`` (plus field violations), and the exit code says what
happened: 0 ok, 1 the task ended FAILED / TIMED_OUT / CANCELLED, 2 usage or
INVALID_ARGUMENT, 3 NOT_FOUND, 4 UNAUTHENTICATED / PERMISSION_DENIED, 5 UNAVAILABLE or
anything else.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import betterproto2
import grpc
import typer
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from . import v1
from .client import SparkSyncClient, Tls, connect_sync
from .errors import code_name, field_violations
from .retry import is_transient, run_workflow_idempotent_sync
from .watch import TERMINAL_STATES

__all__ = ["app"]

EXIT_OK, EXIT_TASK_FAILED, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_AUTH, EXIT_OTHER = range(6)
_EXIT_BY_CODE = {
    "INVALID_ARGUMENT": EXIT_USAGE,
    "NOT_FOUND": EXIT_NOT_FOUND,
    "UNAUTHENTICATED": EXIT_AUTH,
    "PERMISSION_DENIED": EXIT_AUTH,
}
SOURCE_TYPES = {
    "langflow": v1.SourceType.LANGFLOW,
    "automagik-agents": v1.SourceType.AUTOMAGIK_AGENTS,
    "automagik-hive": v1.SourceType.AUTOMAGIK_HIVE,
}

app = typer.Typer(help="spark-grpc from the command line.", no_args_is_help=True)
sources_app = typer.Typer(help="LangFlow / Automagik sources.", no_args_is_help=True)
workflows_app = typer.Typer(help="Imported workflows and runs.", no_args_is_help=True)
tasks_app = typer.Typer(help="Tasks (runs of a workflow).", no_args_is_help=True)
schedules_app = typer.Typer(help="Cron and interval schedules.", no_args_is_help=True)
workers_app = typer.Typer(help="Live workers.", no_args_is_help=True)
app.add_typer(sources_app, name="sources")
app.add_typer(workflows_app, name="workflows")
app.add_typer(tasks_app, name="tasks")
app.add_typer(schedules_app, name="schedules")
app.add_typer(workers_app, name="workers")


@dataclass
class Settings:
    address: str
    api_key: str | None
    tls_ca: str | None
    json: bool


@app.callback()
def main(
    ctx: typer.Context,
    address: str = typer.Option(
        "127.0.0.1:50051", "--address", envvar="SPARK_ADDRESS", help="Server host:port."
    ),
    api_key: str | None = typer.Option(None, "--api-key", envvar="SPARK_API_KEY"),
    tls_ca: str | None = typer.Option(
        None, "--tls-ca", envvar="SPARK_TLS_CA", help="CA file: connect with TLS."
    ),
    json_output: bool = typer.Option(False, "--json", help="Machine-readable JSON output."),
) -> None:
    ctx.obj = Settings(address, api_key or None, tls_ca or None, json_output)


# --- plumbing -------------------------------------------------------------------------------


def _out() -> Console:
    return Console(highlight=False)


def _write(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _fail(message: str, code: int) -> typer.Exit:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()
    return typer.Exit(code)


@contextmanager
def _client(ctx: typer.Context) -> Iterator[SparkSyncClient]:
    """A connected sync client; gRPC errors become one stderr line and an exit code."""
    settings: Settings = ctx.obj
    try:
        spark = connect_sync(
            settings.address,
            api_key=settings.api_key,
            tls=Tls(ca_file=settings.tls_ca) if settings.tls_ca else None,
        )
    except (ValueError, OSError) as err:
        raise _fail(f"error: INVALID_ARGUMENT: {err}", EXIT_USAGE) from None
    try:
        with spark:
            yield spark
    except grpc.RpcError as err:
        code = code_name(err) or "UNKNOWN"
        details = err.details() if isinstance(err, grpc.Call) else str(err)
        lines = [f"error: {code}: {details}"]
        lines += [f"  {v.field}: {v.description}" for v in field_violations(err)]
        raise _fail("\n".join(lines), _EXIT_BY_CODE.get(code, EXIT_OTHER)) from None


def _settings(ctx: typer.Context) -> Settings:
    return ctx.obj  # type: ignore[no-any-return]


def _jsonable(message: betterproto2.Message) -> dict[str, Any]:
    return message.to_dict()


def _emit_json(value: Any) -> None:
    if isinstance(value, betterproto2.Message):
        value = _jsonable(value)
    elif isinstance(value, list):
        value = [_jsonable(v) if isinstance(v, betterproto2.Message) else v for v in value]
    _write(json.dumps(value, indent=2, default=str))


def _when(value: dt.datetime | None) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value else ""


def _enum(value: Any) -> str:
    return getattr(value, "name", None) or str(value)


def _table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    table = Table(title=title, title_justify="left")
    for column in columns:
        # Ids stay whole (to copy); the other columns wrap to fit the terminal.
        table.add_column(column, overflow="fold", no_wrap=column in ("id", "seq"))
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    _out().print(table)


def _show(ctx: typer.Context, message: betterproto2.Message | None, title: str) -> None:
    """One message: JSON, or a two-column table of its set fields."""
    if message is None:
        return
    if _settings(ctx).json:
        _emit_json(message)
        return
    fields = _jsonable(message)
    rows = [(k, v if isinstance(v, str) else json.dumps(v)) for k, v in fields.items()]
    _table(title, ("field", "value"), rows)


def _pages(fetch: Callable[[str], tuple[list[Any], str]], limit: int) -> list[Any]:
    """Items of every page (``fetch(token) -> (items, next_token)``), at most ``limit``."""
    items: list[Any] = []
    token = ""
    while len(items) < limit:
        page, token = fetch(token)
        items.extend(page)
        if not token:
            break
    return items[:limit]


def _done(ctx: typer.Context, text: str, payload: dict[str, Any] | None = None) -> None:
    if _settings(ctx).json:
        _emit_json(payload or {})
    else:
        _out().print(text)


# --- sources ----------------------------------------------------------------------------------


@sources_app.command("add")
def sources_add(
    ctx: typer.Context,
    url: str = typer.Argument(..., help="The source's base URL."),
    name: str = typer.Option("", "--name", help="Display name (default: the URL)."),
    source_type: str = typer.Option(
        "langflow", "--type", help="langflow | automagik-agents | automagik-hive"
    ),
    source_api_key: str = typer.Option("", "--source-api-key", help="The source's API key."),
) -> None:
    """Add a source."""
    kind = SOURCE_TYPES.get(source_type)
    if kind is None:
        raise _fail(f"error: INVALID_ARGUMENT: unknown --type {source_type!r}", EXIT_USAGE)
    with _client(ctx) as spark:
        source = spark.sources.create_source(
            v1.CreateSourceRequest(
                source=v1.Source(
                    display_name=name or url, type=kind, url=url, api_key=source_api_key
                ),
                request_id=str(uuid.uuid4()),
            )
        ).source
    if _settings(ctx).json:
        _emit_json(source)
    elif source is not None:
        _out().print(f"source {source.id} added ({source.display_name})")


@sources_app.command("list")
def sources_list(ctx: typer.Context, limit: int = typer.Option(1000, "--limit")) -> None:
    """List sources."""
    with _client(ctx) as spark:

        def fetch(token: str) -> tuple[list[Any], str]:
            page = spark.sources.list_sources(v1.ListSourcesRequest(page_token=token))
            return page.sources, page.next_page_token

        sources = _pages(fetch, limit)
    if _settings(ctx).json:
        _emit_json(sources)
        return
    _table(
        "Sources",
        ("id", "name", "type", "url", "enabled", "reachable"),
        [
            (
                s.id,
                s.display_name,
                _enum(s.type),
                s.url,
                s.enabled is not False,
                s.health.reachable if s.health else "",
            )
            for s in sources
        ],
    )


@sources_app.command("check")
def sources_check(ctx: typer.Context, source_id: str) -> None:
    """Check that a source answers (and refresh its health)."""
    with _client(ctx) as spark:
        source = spark.sources.check_source(v1.CheckSourceRequest(id=source_id)).source
    if _settings(ctx).json or source is None:
        _emit_json(source or {})
        return
    health = source.health or v1.SourceHealth()
    state = "reachable" if health.reachable else "unreachable"
    detail = " ".join(x for x in (health.version, health.message) if x)
    _out().print(f"source {source.id}: {state} {detail}".rstrip())


@sources_app.command("delete")
def sources_delete(
    ctx: typer.Context,
    source_id: str,
    force: bool = typer.Option(False, "--force", help="Delete its workflows too."),
) -> None:
    """Delete a source."""
    with _client(ctx) as spark:
        reply = spark.sources.delete_source(v1.DeleteSourceRequest(id=source_id, force=force))
    _done(
        ctx,
        f"source {source_id} deleted ({reply.deleted_workflow_count} workflows)",
        {"id": source_id, "deletedWorkflowCount": reply.deleted_workflow_count},
    )


# --- workflows --------------------------------------------------------------------------------


@workflows_app.command("remote")
def workflows_remote(
    ctx: typer.Context, source_id: str, limit: int = typer.Option(1000, "--limit")
) -> None:
    """List the flows a source offers for import."""
    with _client(ctx) as spark:

        def fetch(token: str) -> tuple[list[Any], str]:
            page = spark.sources.list_remote_flows(
                v1.ListRemoteFlowsRequest(source_id=source_id, page_token=token)
            )
            return page.remote_flows, page.next_page_token

        flows = _pages(fetch, limit)
    if _settings(ctx).json:
        _emit_json(flows)
        return
    _table(
        "Remote flows",
        ("id", "name", "kind", "folder"),
        [(f.id, f.name, _enum(f.kind), f.folder_name) for f in flows],
    )


@workflows_app.command("import")
def workflows_import(
    ctx: typer.Context,
    source_id: str,
    remote_flow_id: str,
    tag: list[str] = typer.Option([], "--tag", help="A tag (repeatable)."),  # noqa: B008
) -> None:
    """Import a remote flow as a workflow (again: update it in place)."""
    with _client(ctx) as spark:
        reply = spark.workflows.import_workflow(
            v1.ImportWorkflowRequest(
                source_id=source_id,
                remote_flow_id=remote_flow_id,
                tags=list(tag),
                request_id=str(uuid.uuid4()),
            )
        )
    workflow = reply.workflow
    if _settings(ctx).json:
        _emit_json(workflow)
    elif workflow is not None:
        verb = "imported" if reply.created else "updated"
        _out().print(f"workflow {workflow.id} {verb} ({workflow.display_name})")


@workflows_app.command("list")
def workflows_list(
    ctx: typer.Context,
    source_id: str = typer.Option("", "--source"),
    tag: str = typer.Option("", "--tag"),
    name: str = typer.Option("", "--name", help="Name contains."),
    limit: int = typer.Option(1000, "--limit"),
) -> None:
    """List workflows."""
    with _client(ctx) as spark:

        def fetch(token: str) -> tuple[list[Any], str]:
            page = spark.workflows.list_workflows(
                v1.ListWorkflowsRequest(
                    page_token=token, source_id=source_id, tag=tag, name_contains=name
                )
            )
            return page.workflows, page.next_page_token

        workflows = _pages(fetch, limit)
    if _settings(ctx).json:
        _emit_json(workflows)
        return
    _table(
        "Workflows",
        ("id", "name", "source", "tags", "runs", "failed", "last run"),
        [
            (
                w.id,
                w.display_name,
                w.source_id,
                ",".join(w.tags),
                w.task_count,
                w.failed_task_count,
                _enum(w.latest_run_state) if w.latest_run_state else "",
            )
            for w in workflows
        ],
    )


@workflows_app.command("show")
def workflows_show(ctx: typer.Context, workflow_id: str) -> None:
    """Show a workflow."""
    with _client(ctx) as spark:
        workflow = spark.workflows.get_workflow(v1.GetWorkflowRequest(id=workflow_id)).workflow
    _show(ctx, workflow, "Workflow")


@workflows_app.command("run")
def workflows_run(
    ctx: typer.Context,
    workflow_id: str,
    input_value: str = typer.Option("", "--input", "-i", help="The input message."),
    watch: bool = typer.Option(False, "--watch", "-w", help="Follow it to the end."),
) -> None:
    """Run a workflow (exactly once: the request carries a request id)."""
    with _client(ctx) as spark:
        task = run_workflow_idempotent_sync(
            spark.workflows, v1.RunWorkflowRequest(workflow_id=workflow_id, input_value=input_value)
        )
        if watch:
            _watch(ctx, spark, task.id)
            return
    if _settings(ctx).json:
        _emit_json(task)
    else:
        _out().print(f"task {task.id} {_enum(task.state)}")


@workflows_app.command("delete")
def workflows_delete(
    ctx: typer.Context,
    workflow_id: str,
    force: bool = typer.Option(False, "--force", help="Delete its tasks too."),
) -> None:
    """Delete a workflow."""
    with _client(ctx) as spark:
        reply = spark.workflows.delete_workflow(
            v1.DeleteWorkflowRequest(id=workflow_id, force=force)
        )
    _done(
        ctx,
        f"workflow {workflow_id} deleted ({reply.deleted_task_count} tasks)",
        {"id": workflow_id, "deletedTaskCount": reply.deleted_task_count},
    )


# --- tasks ------------------------------------------------------------------------------------


def _task_state(name: str) -> v1.TaskState:
    try:
        return v1.TaskState[name.upper().removeprefix("TASK_STATE_")]
    except KeyError:
        raise _fail(f"error: INVALID_ARGUMENT: unknown task state {name!r}", EXIT_USAGE) from None


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
    with _client(ctx) as spark:

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

        tasks = _pages(fetch, limit)
    if _settings(ctx).json:
        _emit_json(tasks)
        return
    _table(
        "Tasks",
        ("id", "workflow", "state", "attempt", "created", "finished"),
        [
            (
                t.id,
                t.workflow_id,
                _enum(t.state),
                f"{t.attempt}/{t.max_attempts}",
                _when(t.create_time),
                _when(t.finish_time),
            )
            for t in tasks
        ],
    )


@tasks_app.command("show")
def tasks_show(ctx: typer.Context, task_id: str) -> None:
    """Show a task."""
    with _client(ctx) as spark:
        task = spark.tasks.get_task(v1.GetTaskRequest(id=task_id)).task
    _show(ctx, task, "Task")


@tasks_app.command("watch")
def tasks_watch(ctx: typer.Context, task_id: str) -> None:
    """Follow a task to its end with a live display; print its answer."""
    with _client(ctx) as spark:
        _watch(ctx, spark, task_id)


@tasks_app.command("cancel")
def tasks_cancel(
    ctx: typer.Context, task_id: str, reason: str = typer.Option("", "--reason")
) -> None:
    """Cancel a task."""
    with _client(ctx) as spark:
        task = spark.tasks.cancel_task(v1.CancelTaskRequest(id=task_id, reason=reason)).task
    if _settings(ctx).json:
        _emit_json(task)
    elif task is not None:
        _out().print(f"task {task.id} {_enum(task.state)}")


@tasks_app.command("retry")
def tasks_retry(ctx: typer.Context, task_id: str) -> None:
    """Run a failed, timed out or cancelled task again."""
    with _client(ctx) as spark:
        task = spark.tasks.retry_task(v1.RetryTaskRequest(id=task_id)).task
    if _settings(ctx).json:
        _emit_json(task)
    elif task is not None:
        _out().print(f"task {task.id} {_enum(task.state)}")


def _describe(event: v1.TaskEvent) -> str:
    kind, value = betterproto2.which_one_of(event, "kind")
    if isinstance(value, v1.TaskStateChange):
        text = f"{_enum(value.from_state)} -> {_enum(value.to_state)} (attempt {value.attempt})"
        if value.error is not None:
            text += f": {value.error.kind}: {value.error.message}"
        return text
    if isinstance(value, v1.TaskProgress):
        return f"{value.fraction:.0%} {value.message}"
    if isinstance(value, v1.TaskLogLine):
        return f"{_enum(value.level)} {value.message}"
    if isinstance(value, v1.TaskOutputChunk):
        return value.text
    return kind


@tasks_app.command("logs")
def tasks_logs(ctx: typer.Context, task_id: str) -> None:
    """Print a task's event log."""
    with _client(ctx) as spark:

        def fetch(token: str) -> tuple[list[Any], str]:
            page = spark.tasks.list_task_events(
                v1.ListTaskEventsRequest(task_id=task_id, page_size=1000, page_token=token)
            )
            return page.events, page.next_page_token

        events = _pages(fetch, sys.maxsize)
    if _settings(ctx).json:
        _emit_json(events)
        return
    _table(
        "Events",
        ("seq", "time", "kind", "detail"),
        [
            (e.sequence, _when(e.event_time), betterproto2.which_one_of(e, "kind")[0], _describe(e))
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


def _watch(ctx: typer.Context, spark: SparkSyncClient, task_id: str) -> None:
    """Follows ``task_id`` (a live progress display unless --json), prints the answer and
    exits 1 unless it SUCCEEDED."""
    settings = _settings(ctx)
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
        out = _out()
        with Live(Group(progress, streamed), console=out, refresh_per_second=10) as live:
            for event in _events(spark, task_id):
                change = event.state_change
                if change is not None:
                    state = change.to_state
                    done = state in TERMINAL_STATES
                    progress.update(
                        bar,
                        description=f"task {task_id} {_enum(state)}",
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
        _emit_json(task)
    else:
        _write(task.output_text)
    if task.state != v1.TaskState.SUCCEEDED:
        error = task.error
        why = f": {error.kind}: {error.message}" if error is not None else ""
        raise _fail(f"task {task.id} {_enum(task.state)}{why}", EXIT_TASK_FAILED)


# --- schedules --------------------------------------------------------------------------------


def _spec(cron: str | None, tz: str, every: float | None) -> v1.ScheduleSpec:
    if (cron is None) == (every is None):
        raise _fail("error: INVALID_ARGUMENT: give either --cron (with --tz) or --every", 2)
    if cron is not None:
        return v1.ScheduleSpec(cron=v1.CronSpec(expression=cron, time_zone=tz))
    return v1.ScheduleSpec(interval=v1.IntervalSpec(interval=dt.timedelta(seconds=every or 0)))


def _spec_text(spec: v1.ScheduleSpec | None) -> str:
    if spec is None:
        return ""
    if spec.cron is not None:
        return f"cron {spec.cron.expression} {spec.cron.time_zone}".rstrip()
    if spec.interval is not None and spec.interval.interval is not None:
        return f"every {spec.interval.interval.total_seconds():g}s"
    if spec.one_time is not None:
        return f"once {_when(spec.one_time.fire_time)}"
    return ""


CRON = typer.Option(None, "--cron", help="Cron expression, e.g. '0 9 * * 1-5'.")
TZ = typer.Option("UTC", "--tz", help="IANA time zone of --cron.")
EVERY = typer.Option(None, "--every", help="Interval in seconds.")


@schedules_app.command("create")
def schedules_create(
    ctx: typer.Context,
    workflow_id: str,
    cron: str | None = CRON,
    tz: str = TZ,
    every: float | None = EVERY,
    input_value: str = typer.Option("", "--input", "-i"),
    name: str = typer.Option("", "--name"),
) -> None:
    """Create a schedule: --cron EXPR --tz ZONE, or --every SECONDS."""
    spec = _spec(cron, tz, every)
    with _client(ctx) as spark:
        schedule = spark.schedules.create_schedule(
            v1.CreateScheduleRequest(
                schedule=v1.Schedule(
                    workflow_id=workflow_id, spec=spec, input_value=input_value, display_name=name
                ),
                request_id=str(uuid.uuid4()),
            )
        ).schedule
    if _settings(ctx).json:
        _emit_json(schedule)
    elif schedule is not None:
        _out().print(f"schedule {schedule.id} created, next {_when(schedule.next_fire_time)}")


@schedules_app.command("list")
def schedules_list(
    ctx: typer.Context,
    workflow_id: str = typer.Option("", "--workflow"),
    limit: int = typer.Option(1000, "--limit"),
) -> None:
    """List schedules."""
    with _client(ctx) as spark:

        def fetch(token: str) -> tuple[list[Any], str]:
            page = spark.schedules.list_schedules(
                v1.ListSchedulesRequest(page_token=token, workflow_id=workflow_id)
            )
            return page.schedules, page.next_page_token

        schedules = _pages(fetch, limit)
    if _settings(ctx).json:
        _emit_json(schedules)
        return
    _table(
        "Schedules",
        ("id", "name", "workflow", "spec", "state", "next", "fired"),
        [
            (
                s.id,
                s.display_name,
                s.workflow_id,
                _spec_text(s.spec),
                _enum(s.state),
                _when(s.next_fire_time),
                s.fired_count,
            )
            for s in schedules
        ],
    )


@schedules_app.command("show")
def schedules_show(ctx: typer.Context, schedule_id: str) -> None:
    """Show a schedule."""
    with _client(ctx) as spark:
        schedule = spark.schedules.get_schedule(v1.GetScheduleRequest(id=schedule_id)).schedule
    _show(ctx, schedule, "Schedule")


@schedules_app.command("preview")
def schedules_preview(
    ctx: typer.Context,
    schedule_id: str = typer.Argument("", help="A schedule (or give --cron / --every)."),
    cron: str | None = CRON,
    tz: str = TZ,
    every: float | None = EVERY,
    count: int = typer.Option(5, "--count"),
) -> None:
    """The next fire times of a schedule or of a spec, without saving anything."""
    with _client(ctx) as spark:
        if schedule_id:
            schedule = spark.schedules.get_schedule(v1.GetScheduleRequest(id=schedule_id))
            spec = schedule.schedule.spec if schedule.schedule else None
        else:
            spec = _spec(cron, tz, every)
        reply = spark.schedules.preview_schedule(v1.PreviewScheduleRequest(spec=spec, count=count))
    if _settings(ctx).json:
        _emit_json([t.isoformat() for t in reply.fire_times])
        return
    local = list(reply.local_times) + [""] * len(reply.fire_times)
    _table(
        "Next fire times",
        ("utc", "local"),
        [(t.isoformat(), loc) for t, loc in zip(reply.fire_times, local, strict=False)],
    )


@schedules_app.command("pause")
def schedules_pause(
    ctx: typer.Context, schedule_id: str, note: str = typer.Option("", "--note")
) -> None:
    """Pause a schedule."""
    with _client(ctx) as spark:
        schedule = spark.schedules.pause_schedule(
            v1.PauseScheduleRequest(id=schedule_id, note=note)
        ).schedule
    if _settings(ctx).json:
        _emit_json(schedule)
    else:
        _out().print(f"schedule {schedule_id} paused")


@schedules_app.command("resume")
def schedules_resume(ctx: typer.Context, schedule_id: str) -> None:
    """Resume a paused schedule."""
    with _client(ctx) as spark:
        schedule = spark.schedules.resume_schedule(
            v1.ResumeScheduleRequest(id=schedule_id)
        ).schedule
    if _settings(ctx).json:
        _emit_json(schedule)
    elif schedule is not None:
        _out().print(f"schedule {schedule_id} resumed, next {_when(schedule.next_fire_time)}")


@schedules_app.command("trigger")
def schedules_trigger(ctx: typer.Context, schedule_id: str) -> None:
    """Fire a schedule now."""
    with _client(ctx) as spark:
        reply = spark.schedules.trigger_schedule(v1.TriggerScheduleRequest(id=schedule_id))
    if _settings(ctx).json:
        _emit_json(reply)
    elif reply.skipped or reply.task is None:
        _out().print(f"schedule {schedule_id}: skipped (a run is in progress)")
    else:
        _out().print(f"schedule {schedule_id}: task {reply.task.id} {_enum(reply.task.state)}")


@schedules_app.command("delete")
def schedules_delete(ctx: typer.Context, schedule_id: str) -> None:
    """Delete a schedule."""
    with _client(ctx) as spark:
        spark.schedules.delete_schedule(v1.DeleteScheduleRequest(id=schedule_id))
    _done(ctx, f"schedule {schedule_id} deleted", {"id": schedule_id})


# --- workers and status -----------------------------------------------------------------------


@workers_app.command("list")
def workers_list(ctx: typer.Context) -> None:
    """List live workers."""
    with _client(ctx) as spark:
        workers = spark.workers.list_workers(v1.ListWorkersRequest()).workers
    if _settings(ctx).json:
        _emit_json(workers)
        return
    _table(
        "Workers",
        ("name", "host", "pid", "queues", "state", "task", "heartbeat", "done", "failed"),
        [
            (
                w.name,
                w.host,
                w.pid,
                ",".join(w.queues),
                _enum(w.state),
                w.current_task_id,
                f"{w.heartbeat_age.total_seconds():.1f}s" if w.heartbeat_age else "",
                w.succeeded_task_count,
                w.failed_task_count,
            )
            for w in workers
        ],
    )


@app.command("status")
def status(ctx: typer.Context) -> None:
    """Is the server reachable? With how many workers and sources."""
    settings = _settings(ctx)
    with _client(ctx) as spark:
        try:
            workers = spark.workers.list_workers(v1.ListWorkersRequest()).workers
            sources = spark.sources.list_sources(v1.ListSourcesRequest(page_size=1000)).sources
        except grpc.RpcError as err:
            if code_name(err) not in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
                raise
            if settings.json:
                _emit_json({"address": settings.address, "reachable": False})
            raise _fail(f"server {settings.address}: unreachable", EXIT_OTHER) from None
    report = {
        "address": settings.address,
        "reachable": True,
        "workers": len(workers),
        "busyWorkers": sum(w.state == v1.WorkerState.BUSY for w in workers),
        "sources": len(sources),
        "reachableSources": sum(bool(s.health and s.health.reachable) for s in sources),
    }
    if settings.json:
        _emit_json(report)
        return
    _out().print(
        f"server {settings.address}: reachable\n"
        f"workers: {report['workers']} ({report['busyWorkers']} busy)\n"
        f"sources: {report['sources']} ({report['reachableSources']} reachable at last check)"
    )
