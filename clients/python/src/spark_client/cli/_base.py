"""The ``spark`` app, its global options, and the plumbing every command shares: one
connected client per command, gRPC errors as one stderr line and an exit code, tables and
JSON output."""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import betterproto2
import grpc
import typer
from rich.console import Console
from rich.table import Table

from ..client import SparkSyncClient, Tls, connect_sync
from ..errors import code_name, field_violations

EXIT_OK, EXIT_TASK_FAILED, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_AUTH, EXIT_OTHER = range(6)
EXIT_BY_CODE = {
    "INVALID_ARGUMENT": EXIT_USAGE,
    "NOT_FOUND": EXIT_NOT_FOUND,
    "UNAUTHENTICATED": EXIT_AUTH,
    "PERMISSION_DENIED": EXIT_AUTH,
}

app = typer.Typer(help="spark-grpc from the command line.", no_args_is_help=True)
sources_app = typer.Typer(help="LangFlow / Automagik sources.", no_args_is_help=True)
workflows_app = typer.Typer(help="Imported workflows and runs.", no_args_is_help=True)
tasks_app = typer.Typer(help="Tasks (runs of a workflow).", no_args_is_help=True)
schedules_app = typer.Typer(help="Cron, interval and one-time schedules.", no_args_is_help=True)
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


def console() -> Console:
    return Console(highlight=False)


def write_line(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def fail(message: str, code: int) -> typer.Exit:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()
    return typer.Exit(code)


@contextmanager
def connected(ctx: typer.Context) -> Iterator[SparkSyncClient]:
    """A connected sync client; gRPC errors become one stderr line and an exit code."""
    settings: Settings = ctx.obj
    try:
        spark = connect_sync(
            settings.address,
            api_key=settings.api_key,
            tls=Tls(ca_file=settings.tls_ca) if settings.tls_ca else None,
        )
    except (ValueError, OSError) as err:
        raise fail(f"error: INVALID_ARGUMENT: {err}", EXIT_USAGE) from None
    try:
        with spark:
            yield spark
    except grpc.RpcError as err:
        code = code_name(err) or "UNKNOWN"
        details = err.details() if isinstance(err, grpc.Call) else str(err)
        lines = [f"error: {code}: {details}"]
        lines += [f"  {v.field}: {v.description}" for v in field_violations(err)]
        raise fail("\n".join(lines), EXIT_BY_CODE.get(code, EXIT_OTHER)) from None


def settings_of(ctx: typer.Context) -> Settings:
    return ctx.obj  # type: ignore[no-any-return]


def jsonable(message: betterproto2.Message) -> dict[str, Any]:
    return message.to_dict()


def emit_json(value: Any) -> None:
    if isinstance(value, betterproto2.Message):
        value = jsonable(value)
    elif isinstance(value, list):
        value = [jsonable(v) if isinstance(v, betterproto2.Message) else v for v in value]
    write_line(json.dumps(value, indent=2, default=str))


def when(value: dt.datetime | None) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value else ""


def enum_name(value: Any) -> str:
    return getattr(value, "name", None) or str(value)


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    table = Table(title=title, title_justify="left")
    for column in columns:
        # Ids stay whole (to copy); the other columns wrap to fit the terminal.
        table.add_column(column, overflow="fold", no_wrap=column in ("id", "seq"))
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    console().print(table)


def show_message(ctx: typer.Context, message: betterproto2.Message | None, title: str) -> None:
    """One message: JSON, or a two-column table of its set fields."""
    if message is None:
        return
    if settings_of(ctx).json:
        emit_json(message)
        return
    fields = jsonable(message)
    rows = [(k, v if isinstance(v, str) else json.dumps(v)) for k, v in fields.items()]
    print_table(title, ("field", "value"), rows)


def all_pages(fetch: Callable[[str], tuple[list[Any], str]], limit: int) -> list[Any]:
    """Items of every page (``fetch(token) -> (items, next_token)``), at most ``limit``."""
    items: list[Any] = []
    token = ""
    while len(items) < limit:
        page, token = fetch(token)
        items.extend(page)
        if not token:
            break
    return items[:limit]


def report_done(ctx: typer.Context, text: str, payload: dict[str, Any] | None = None) -> None:
    if settings_of(ctx).json:
        emit_json(payload or {})
    else:
        console().print(text)
