"""``spark workers list`` and ``spark status``: the deployment at a glance."""

from __future__ import annotations

import datetime as dt
from typing import Any

import grpc
import typer

from .. import v1
from ..errors import code_name, error_info
from ._base import (
    EXIT_OTHER,
    app,
    connected,
    emit_json,
    enum_name,
    fail,
    print_table,
    settings_of,
    when,
    workers_app,
)


@workers_app.command("list")
def workers_list(ctx: typer.Context) -> None:
    """List live workers."""
    with connected(ctx) as spark:
        workers = spark.workers.list_workers(v1.ListWorkersRequest()).workers
    if settings_of(ctx).json:
        emit_json(workers)
        return
    print_table(
        "Workers",
        ("name", "host", "pid", "queues", "state", "task", "heartbeat", "done", "failed"),
        [
            (
                w.name,
                w.host,
                w.pid,
                ",".join(w.queues),
                enum_name(w.state),
                w.current_task_id,
                f"{w.heartbeat_age.total_seconds():.1f}s" if w.heartbeat_age else "",
                w.succeeded_task_count,
                w.failed_task_count,
            )
            for w in workers
        ],
    )


def _span(value: dt.timedelta | None) -> str:
    """A duration for people: 850 ms, 4.2 s, 3 m 12 s, 2 h 03 m, 3 d 4 h."""
    if value is None:
        return ""
    seconds = value.total_seconds()
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, hours, days = int(seconds // 60), int(seconds // 3600), int(seconds // 86400)
    if hours < 1:
        return f"{minutes} m {int(seconds) % 60:02d} s"
    if days < 1:
        return f"{hours} h {minutes % 60:02d} m"
    return f"{days} d {hours % 24} h"


def _ago(value: dt.datetime | None, now: dt.datetime) -> str:
    return f"{_span(max(now - value, dt.timedelta(0)))} ago" if value else "never"


def _rows(
    address: str, reply: v1.GetSystemStatusResponse, sources: list[v1.Source] | None
) -> list[tuple[str, str, str]]:
    """(component, state, detail) lines of the status table."""
    server = reply.server or v1.ServerStatus()
    database = reply.database or v1.DatabaseStatus()
    redis = reply.redis or v1.RedisStatus()
    workers = reply.workers or v1.WorkersStatus()
    schedulers = reply.schedulers or v1.SchedulersStatus()
    now = reply.check_time or dt.datetime.now(dt.timezone.utc)
    rows = [
        (
            "server",
            "ok",
            f"{address}: spark-grpc {server.version}, replica {server.replica}, "
            f"up {_span(server.uptime)}",
        )
    ]
    if database.reachable:
        head = database.schema_head_revision
        if not database.schema_revision:
            schema = "not migrated: run spark-grpc migrate"
        elif head and database.schema_revision != head:
            schema = f"schema {database.schema_revision}, head {head}: run spark-grpc migrate"
        else:
            schema = f"schema {database.schema_revision} (up to date)"
        rows.append(("database", "ok", f"{_span(database.latency)} round trip, {schema}"))
    else:
        rows.append(("database", "UNREACHABLE", database.error))
    if redis.reachable:
        detail = f"{_span(redis.latency)} round trip, Redis {redis.version}, "
        rows.append(("redis", "ok", detail + f"{redis.queue_depth} job(s) queued"))
    else:
        rows.append(("redis", "UNREACHABLE", redis.error))
    if redis.reachable:
        state = f"{workers.live_count} live" if workers.live_count else "none"
        rows.append(("workers", state, f"{workers.busy_count} busy"))
        live = schedulers.schedulers
        ticks = "; ".join(
            f"{s.name}: heartbeat {_span(s.heartbeat_age)} ago, last tick "
            f"{_ago(s.last_tick_time, now)}"
            + (f" ({s.last_tick_error})" if s.last_tick_error else "")
            for s in live
        )
        rows.append(("schedulers", f"{len(live)} live" if live else "none", ticks))
    else:
        rows.append(("workers", "unknown", "Redis is unreachable"))
        rows.append(("schedulers", "unknown", "Redis is unreachable"))
    if database.reachable:
        due = f", next fire {when(schedulers.next_fire_time)}" if schedulers.next_fire_time else ""
        rows.append(("schedules", f"{schedulers.active_schedule_count} active", due.lstrip(", ")))
    if sources is not None:
        healthy = sum(bool(s.health and s.health.reachable) for s in sources)
        rows.append(("sources", str(len(sources)), f"{healthy} reachable at their last check"))
    return rows


@app.command("status")
def status(ctx: typer.Context) -> None:
    """The server, database, Redis, workers and schedulers at a glance.

    Exits 0 when the server, PostgreSQL and Redis all answer, 5 when one does not (the
    report is printed either way).
    """
    settings = settings_of(ctx)
    with connected(ctx) as spark:
        try:
            reply = spark.system.get_system_status(v1.GetSystemStatusRequest())
        except grpc.RpcError as err:
            if code_name(err) not in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
                raise
            details = err.details() if isinstance(err, grpc.Call) else str(err)
            # Spark's own errors carry an ErrorInfo: then the server answered, e.g. that it
            # cannot check an API key while PostgreSQL is down.
            answered = error_info(err) is not None
            if settings.json:
                emit_json({"address": settings.address, "reachable": answered, "error": details})
            where = "" if answered else f"server {settings.address} unreachable: "
            raise fail(f"error: {code_name(err)}: {where}{details}", EXIT_OTHER) from None
        sources: list[v1.Source] | None = None
        if reply.database is not None and reply.database.reachable:
            try:
                page = spark.sources.list_sources(v1.ListSourcesRequest(page_size=1000))
                sources = list(page.sources)
            except grpc.RpcError as err:
                if code_name(err) != "UNAVAILABLE":
                    raise
    down = [
        name
        for name, component in (("database", reply.database), ("redis", reply.redis))
        if component is None or not component.reachable
    ]
    if settings.json:
        payload: dict[str, Any] = {"address": settings.address, "reachable": True}
        payload.update(reply.to_dict(include_default_values=True))
        if sources is not None:
            healthy = sum(bool(s.health and s.health.reachable) for s in sources)
            payload["sources"] = {"count": len(sources), "reachableCount": healthy}
        emit_json(payload)
    else:
        print_table(
            "Status", ("component", "state", "detail"), _rows(settings.address, reply, sources)
        )
    if down:
        raise fail(f"error: UNAVAILABLE: {' and '.join(down)} unreachable", EXIT_OTHER)
