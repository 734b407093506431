"""``spark schedules``: create, list, show, preview, pause, resume, trigger, update and
delete schedules.

A spec is one of ``--cron EXPR`` (in ``--tz``), ``--every SECONDS`` or ``--at TIME`` (once;
a time without an offset is read in ``--tz``).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import typer

from .. import v1
from .._gen.google.protobuf import FieldMask
from ._base import (
    EXIT_USAGE,
    all_pages,
    connected,
    console,
    emit_json,
    enum_name,
    fail,
    print_table,
    report_done,
    schedules_app,
    settings_of,
    show_message,
    when,
)

OVERLAP_POLICIES = {
    "skip": v1.OverlapPolicy.SKIP,
    "buffer-one": v1.OverlapPolicy.BUFFER_ONE,
    "allow-all": v1.OverlapPolicy.ALLOW_ALL,
    "cancel-other": v1.OverlapPolicy.CANCEL_OTHER,
}

CRON = typer.Option(None, "--cron", help="Cron expression, e.g. '0 9 * * 1-5', or @daily.")
TZ = typer.Option("UTC", "--tz", help="IANA time zone of --cron and --at.")
EVERY = typer.Option(None, "--every", help="Interval in seconds.")
AT = typer.Option(None, "--at", help="Fire once, at an ISO 8601 time, e.g. 2026-05-01T09:00.")
INPUT = typer.Option(None, "--input", "-i", help="The input of every run.")
NAME = typer.Option(None, "--name", help="Display name.")
OVERLAP = typer.Option(
    None, "--overlap", help="While a run is going: skip | buffer-one | allow-all | cancel-other."
)
JITTER = typer.Option(None, "--jitter", help="Start each run up to this many seconds late.")
CATCHUP = typer.Option(
    None, "--catchup-window", help="Seconds within which a missed fire time still fires."
)


def _usage(message: str) -> typer.Exit:
    return fail(f"error: INVALID_ARGUMENT: {message}", EXIT_USAGE)


def _once(at: str, tz: str) -> dt.datetime:
    try:
        fire_time = dt.datetime.fromisoformat(at.strip().replace("Z", "+00:00"))
    except ValueError:
        raise _usage(
            f"--at {at!r} is not an ISO 8601 time such as 2026-05-01T09:00 or 2026-05-01T07:00:00Z"
        ) from None
    if fire_time.tzinfo is None:
        try:
            fire_time = fire_time.replace(tzinfo=ZoneInfo(tz))
        except (ZoneInfoNotFoundError, ValueError):
            raise _usage(f"unknown --tz {tz!r}; use an IANA name such as Europe/Paris") from None
    return fire_time


def build_spec(
    cron: str | None, tz: str, every: float | None, at: str | None = None, *, required: bool = True
) -> v1.ScheduleSpec | None:
    """The spec the flags describe; None when none is given and ``required`` is false."""
    flags = (("--cron", cron), ("--every", every), ("--at", at))
    given = [flag for flag, value in flags if value is not None]
    if len(given) > 1:
        raise _usage(f"give one of --cron, --every and --at, not {' and '.join(given)}")
    if cron is not None:
        return v1.ScheduleSpec(cron=v1.CronSpec(expression=cron, time_zone=tz))
    if every is not None:
        return v1.ScheduleSpec(interval=v1.IntervalSpec(interval=dt.timedelta(seconds=every)))
    if at is not None:
        return v1.ScheduleSpec(one_time=v1.OneTimeSpec(fire_time=_once(at, tz)))
    if required:
        raise _usage("give --cron (with --tz), --every or --at")
    return None


def spec_text(spec: v1.ScheduleSpec | None) -> str:
    if spec is None:
        return ""
    if spec.cron is not None:
        return f"cron {spec.cron.expression} {spec.cron.time_zone}".rstrip()
    if spec.interval is not None and spec.interval.interval is not None:
        return f"every {spec.interval.interval.total_seconds():g}s"
    if spec.one_time is not None:
        return f"once {when(spec.one_time.fire_time)}"
    return ""


def _overlap(name: str) -> v1.OverlapPolicy:
    policy = OVERLAP_POLICIES.get(name)
    if policy is None:
        raise _usage(f"unknown --overlap {name!r} ({' | '.join(OVERLAP_POLICIES)})")
    return policy


def _fields(
    schedule: v1.Schedule,
    *,
    input_value: str | None,
    name: str | None,
    overlap: str | None,
    jitter: float | None,
    catchup: float | None,
) -> list[str]:
    """Sets the fields the flags give on ``schedule``; their update mask paths."""
    paths = []
    if input_value is not None:
        schedule.input_value = input_value
        paths.append("input_value")
    if name is not None:
        schedule.display_name = name
        paths.append("display_name")
    if overlap is not None:
        schedule.overlap_policy = _overlap(overlap)
        paths.append("overlap_policy")
    if jitter is not None:
        schedule.jitter = dt.timedelta(seconds=jitter)
        paths.append("jitter")
    if catchup is not None:
        schedule.catchup_window = dt.timedelta(seconds=catchup)
        paths.append("catchup_window")
    return paths


@schedules_app.command("create")
def schedules_create(
    ctx: typer.Context,
    workflow_id: str,
    cron: str | None = CRON,
    tz: str = TZ,
    every: float | None = EVERY,
    at: str | None = AT,
    input_value: str | None = INPUT,
    name: str | None = NAME,
    overlap: str | None = OVERLAP,
    jitter: float | None = JITTER,
    catchup: float | None = CATCHUP,
) -> None:
    """Create a schedule: --cron EXPR [--tz ZONE], --every SECONDS or --at TIME [--tz ZONE]."""
    schedule = v1.Schedule(workflow_id=workflow_id, spec=build_spec(cron, tz, every, at))
    _fields(
        schedule,
        input_value=input_value,
        name=name,
        overlap=overlap,
        jitter=jitter,
        catchup=catchup,
    )
    with connected(ctx) as spark:
        created = spark.schedules.create_schedule(
            v1.CreateScheduleRequest(schedule=schedule, request_id=str(uuid.uuid4()))
        ).schedule
    if settings_of(ctx).json:
        emit_json(created)
    elif created is not None:
        console().print(f"schedule {created.id} created, next {when(created.next_fire_time)}")


@schedules_app.command("update")
def schedules_update(
    ctx: typer.Context,
    schedule_id: str,
    cron: str | None = CRON,
    tz: str = TZ,
    every: float | None = EVERY,
    at: str | None = AT,
    input_value: str | None = INPUT,
    name: str | None = NAME,
    overlap: str | None = OVERLAP,
    jitter: float | None = JITTER,
    catchup: float | None = CATCHUP,
) -> None:
    """Change a schedule: only what the flags give (a new spec takes effect at once)."""
    spec = build_spec(cron, tz, every, at, required=False)
    schedule = v1.Schedule(id=schedule_id, spec=spec)
    paths = ["spec"] if spec is not None else []
    paths += _fields(
        schedule,
        input_value=input_value,
        name=name,
        overlap=overlap,
        jitter=jitter,
        catchup=catchup,
    )
    if not paths:
        raise _usage(
            "nothing to change: give --cron, --every or --at, --input, --name, --overlap, "
            "--jitter or --catchup-window"
        )
    with connected(ctx) as spark:
        updated = spark.schedules.update_schedule(
            v1.UpdateScheduleRequest(schedule=schedule, update_mask=FieldMask(paths=paths))
        ).schedule
    if settings_of(ctx).json:
        emit_json(updated)
    elif updated is not None:
        changed = ", ".join(paths)
        console().print(
            f"schedule {updated.id} updated ({changed}), next {when(updated.next_fire_time)}"
        )


@schedules_app.command("list")
def schedules_list(
    ctx: typer.Context,
    workflow_id: str = typer.Option("", "--workflow"),
    limit: int = typer.Option(1000, "--limit"),
) -> None:
    """List schedules."""
    with connected(ctx) as spark:

        def fetch(token: str) -> tuple[list[Any], str]:
            page = spark.schedules.list_schedules(
                v1.ListSchedulesRequest(page_token=token, workflow_id=workflow_id)
            )
            return page.schedules, page.next_page_token

        schedules = all_pages(fetch, limit)
    if settings_of(ctx).json:
        emit_json(schedules)
        return
    print_table(
        "Schedules",
        ("id", "name", "workflow", "spec", "state", "next", "fired"),
        [
            (
                s.id,
                s.display_name,
                s.workflow_id,
                spec_text(s.spec),
                enum_name(s.state),
                when(s.next_fire_time),
                s.fired_count,
            )
            for s in schedules
        ],
    )


@schedules_app.command("show")
def schedules_show(ctx: typer.Context, schedule_id: str) -> None:
    """Show a schedule."""
    with connected(ctx) as spark:
        schedule = spark.schedules.get_schedule(v1.GetScheduleRequest(id=schedule_id)).schedule
    show_message(ctx, schedule, "Schedule")


@schedules_app.command("preview")
def schedules_preview(
    ctx: typer.Context,
    schedule_id: str = typer.Argument("", help="A schedule (or give --cron, --every or --at)."),
    cron: str | None = CRON,
    tz: str = TZ,
    every: float | None = EVERY,
    at: str | None = AT,
    count: int = typer.Option(5, "--count"),
) -> None:
    """The next fire times of a schedule or of a spec, without saving anything."""
    with connected(ctx) as spark:
        if schedule_id:
            schedule = spark.schedules.get_schedule(v1.GetScheduleRequest(id=schedule_id))
            spec = schedule.schedule.spec if schedule.schedule else None
        else:
            spec = build_spec(cron, tz, every, at)
        reply = spark.schedules.preview_schedule(v1.PreviewScheduleRequest(spec=spec, count=count))
    if settings_of(ctx).json:
        emit_json([t.isoformat() for t in reply.fire_times])
        return
    local = list(reply.local_times) + [""] * len(reply.fire_times)
    print_table(
        "Next fire times",
        ("utc", "local"),
        [(t.isoformat(), loc) for t, loc in zip(reply.fire_times, local, strict=False)],
    )


@schedules_app.command("pause")
def schedules_pause(
    ctx: typer.Context, schedule_id: str, note: str = typer.Option("", "--note")
) -> None:
    """Pause a schedule."""
    with connected(ctx) as spark:
        schedule = spark.schedules.pause_schedule(
            v1.PauseScheduleRequest(id=schedule_id, note=note)
        ).schedule
    if settings_of(ctx).json:
        emit_json(schedule)
    else:
        console().print(f"schedule {schedule_id} paused")


@schedules_app.command("resume")
def schedules_resume(ctx: typer.Context, schedule_id: str) -> None:
    """Resume a paused schedule."""
    with connected(ctx) as spark:
        schedule = spark.schedules.resume_schedule(
            v1.ResumeScheduleRequest(id=schedule_id)
        ).schedule
    if settings_of(ctx).json:
        emit_json(schedule)
    elif schedule is not None:
        console().print(f"schedule {schedule_id} resumed, next {when(schedule.next_fire_time)}")


@schedules_app.command("trigger")
def schedules_trigger(ctx: typer.Context, schedule_id: str) -> None:
    """Fire a schedule now."""
    with connected(ctx) as spark:
        reply = spark.schedules.trigger_schedule(v1.TriggerScheduleRequest(id=schedule_id))
    if settings_of(ctx).json:
        emit_json(reply)
    elif reply.skipped or reply.task is None:
        console().print(f"schedule {schedule_id}: skipped (a run is in progress)")
    else:
        console().print(
            f"schedule {schedule_id}: task {reply.task.id} {enum_name(reply.task.state)}"
        )


@schedules_app.command("delete")
def schedules_delete(ctx: typer.Context, schedule_id: str) -> None:
    """Delete a schedule."""
    with connected(ctx) as spark:
        spark.schedules.delete_schedule(v1.DeleteScheduleRequest(id=schedule_id))
    report_done(ctx, f"schedule {schedule_id} deleted", {"id": schedule_id})
