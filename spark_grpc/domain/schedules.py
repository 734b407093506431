"""Schedule maths, with no I/O and an injectable clock: fire times of cron (in an IANA
zone), interval and one-time specs; DST gaps and folds; jitter; catch-up after downtime.

Cron times are computed on the zone's wall clock (croniter over naive local times), then
converted to UTC with explicit rules:
- a wall time that a DST change skips (a gap) is read with the offset in force before the
  change (zoneinfo's fold=0), so ``02:30`` on a spring-forward day in America/New_York
  fires at 07:30 UTC, which is 03:30 EDT: once that day;
- a wall time that a DST change repeats (a fold) appears once in the wall-clock sequence
  and is read as its first occurrence: ``01:30`` fires once, at 01:30 EDT.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

MACROS = ("@hourly", "@daily", "@weekly", "@monthly", "@yearly", "@annually", "@midnight")
MIN_INTERVAL_S = 1.0
MAX_JITTER_S = 3600.0
DEFAULT_CATCHUP_WINDOW_S = 60.0
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class SpecError(ValueError):
    """A spec that cannot fire; the message names what is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class CronSpec:
    """Cron fields (or a macro) in a time zone."""

    expression: str
    time_zone: str = "UTC"


@dataclass(frozen=True)
class IntervalSpec:
    """Every interval since the epoch, shifted by phase."""

    interval_s: float
    phase_s: float = 0.0


@dataclass(frozen=True)
class OneTimeSpec:
    """Once, at a time."""

    fire_time: datetime


Spec = CronSpec | IntervalSpec | OneTimeSpec


def zone(name: str) -> ZoneInfo:
    """The IANA zone, or SpecError."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        raise SpecError(
            "time_zone", f"unknown time zone {name!r}; use an IANA name such as Europe/Paris"
        ) from None


def validate(spec: Spec) -> None:
    """Raises SpecError when the spec is malformed."""
    if isinstance(spec, CronSpec):
        expression = spec.expression.strip()
        if expression.startswith("@"):
            if expression not in MACROS:
                raise SpecError(
                    "expression", f"unknown macro {expression!r}; use one of {', '.join(MACROS)}"
                )
        elif len(expression.split()) != 5 or not croniter.is_valid(expression):
            raise SpecError(
                "expression",
                f"{expression!r} is not a 5-field cron expression (minute hour day month weekday)",
            )
        zone(spec.time_zone)
    elif isinstance(spec, IntervalSpec):
        if spec.interval_s < MIN_INTERVAL_S:
            raise SpecError("interval", "must be at least 1 s")
        if not 0 <= spec.phase_s < spec.interval_s:
            raise SpecError("phase", "must be at least 0 and less than the interval")
    elif spec.fire_time.tzinfo is None:
        raise SpecError("fire_time", "must be an aware time")


def _cron_times(spec: CronSpec, after: datetime) -> Iterator[datetime]:
    tz = zone(spec.time_zone)
    local_after = after.astimezone(tz).replace(tzinfo=None)
    # Start a little before `after` on the wall clock so a fold's first occurrence is not
    # missed; anything not strictly after `after` is dropped below.
    it = croniter(spec.expression.strip(), local_after - timedelta(hours=3))
    while True:
        wall: datetime = it.get_next(datetime)
        instant = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
        if instant > after:
            yield instant


def fire_times(
    spec: Spec, after: datetime, *, start: datetime | None = None, end: datetime | None = None
) -> Iterator[datetime]:
    """Nominal fire times strictly after ``after``, within [start, end], in order (UTC)."""
    if start is not None and start > after:
        after = start - timedelta(microseconds=1)
    if isinstance(spec, OneTimeSpec):
        times: Iterator[datetime] = iter([spec.fire_time] if spec.fire_time > after else [])
    elif isinstance(spec, IntervalSpec):
        times = _interval_times(spec, after)
    else:
        times = _cron_times(spec, after)
    last: datetime | None = None
    for t in times:
        if end is not None and t > end:
            return
        if last is not None and t <= last:
            continue  # two wall times mapping to one instant (gap) fire once
        last = t
        yield t


def _interval_times(spec: IntervalSpec, after: datetime) -> Iterator[datetime]:
    step = timedelta(seconds=spec.interval_s)
    origin = _EPOCH + timedelta(seconds=spec.phase_s)
    k = (after - origin) // step + 1
    while True:
        yield origin + k * step
        k += 1


def next_fire_time(
    spec: Spec, after: datetime, *, start: datetime | None = None, end: datetime | None = None
) -> datetime | None:
    """The first fire time after ``after``, or None when there is none."""
    return next(fire_times(spec, after, start=start, end=end), None)


def jitter_offset(schedule_id: str, nominal: datetime, jitter_s: float) -> timedelta:
    """A delay in [0, jitter) that is the same on every replica for one fire time."""
    if jitter_s <= 0:
        return timedelta(0)
    digest = hashlib.sha256(f"{schedule_id}:{nominal.isoformat()}".encode()).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2**64
    return timedelta(seconds=fraction * jitter_s)


@dataclass(frozen=True)
class DuePlan:
    """What to do with the fire times that came due since the last look."""

    fire: datetime | None  # the nominal time to fire now, if any
    missed: int  # due times not fired (outside the catch-up window, or superseded)
    next_fire: datetime | None  # the next nominal time after now


def plan_due(
    spec: Spec,
    due_from: datetime,
    now: datetime,
    *,
    catchup_window_s: float,
    start: datetime | None = None,
    end: datetime | None = None,
    limit: int = 100_000,
) -> DuePlan:
    """Applies the catch-up rule to the times in [due_from, now].

    The latest due time inside the window fires once; every other due time is missed.
    In normal operation exactly one time is due and it fires.
    """
    window_start = now - timedelta(seconds=catchup_window_s or DEFAULT_CATCHUP_WINDOW_S)
    due: list[datetime] = []
    count = 0
    for t in fire_times(spec, due_from - timedelta(microseconds=1), start=start, end=end):
        if t > now or count >= limit:
            break
        count += 1
        due = [t]  # keep only the latest
    fire = due[0] if due and due[0] >= window_start else None
    missed = count - (1 if fire is not None else 0)
    return DuePlan(
        fire=fire, missed=missed, next_fire=next_fire_time(spec, now, start=start, end=end)
    )
