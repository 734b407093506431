"""Schedule maths with an injected clock: no I/O, no sleeping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import islice
from zoneinfo import ZoneInfo

import pytest

from spark_grpc.domain.schedules import (
    CronSpec,
    IntervalSpec,
    OneTimeSpec,
    SpecError,
    fire_times,
    jitter_offset,
    next_fire_time,
    plan_due,
    validate,
)

NY = ZoneInfo("America/New_York")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def local_times(spec: CronSpec, after: datetime, n: int) -> list[str]:
    return [
        t.astimezone(ZoneInfo(spec.time_zone)).isoformat()
        for t in islice(fire_times(spec, after), n)
    ]


def test_daily_cron_across_spring_forward_fires_once_at_0330_local() -> None:
    times = local_times(CronSpec("30 2 * * *", "America/New_York"), utc(2026, 3, 6), 4)
    assert times == [
        "2026-03-06T02:30:00-05:00",
        "2026-03-07T02:30:00-05:00",
        "2026-03-08T03:30:00-04:00",  # 02:30 does not exist that day: fires once, at 03:30
        "2026-03-09T02:30:00-04:00",
    ]


def test_daily_cron_in_the_repeated_hour_fires_once() -> None:
    times = local_times(CronSpec("30 1 * * *", "America/New_York"), utc(2026, 10, 31), 3)
    assert times == [
        "2026-10-31T01:30:00-04:00",
        "2026-11-01T01:30:00-04:00",  # 01:30 happens twice that day: only the first fires
        "2026-11-02T01:30:00-05:00",
    ]


def test_hourly_across_fall_back_never_fires_the_same_instant_twice() -> None:
    times = list(
        islice(fire_times(CronSpec("0 * * * *", "America/New_York"), utc(2026, 11, 1, 3)), 6)
    )
    assert len(set(times)) == 6 and times == sorted(times)


@pytest.mark.parametrize(
    ("macro", "after", "expected"),
    [
        ("@hourly", utc(2026, 1, 1, 10, 5), utc(2026, 1, 1, 11)),
        ("@daily", utc(2026, 1, 1, 10, 5), utc(2026, 1, 2)),
        ("@midnight", utc(2026, 1, 1, 10, 5), utc(2026, 1, 2)),
        ("@weekly", utc(2026, 1, 1), utc(2026, 1, 4)),  # a Sunday
        ("@monthly", utc(2026, 1, 15), utc(2026, 2, 1)),
        ("@yearly", utc(2026, 1, 15), utc(2027, 1, 1)),
        ("@annually", utc(2026, 1, 15), utc(2027, 1, 1)),
    ],
)
def test_macros(macro: str, after: datetime, expected: datetime) -> None:
    assert next_fire_time(CronSpec(macro), after) == expected


def test_cron_in_a_zone_is_wall_clock_time() -> None:
    assert next_fire_time(CronSpec("0 9 * * 1-5", "Europe/Paris"), utc(2026, 7, 1, 12)) == utc(
        2026, 7, 2, 7
    )


def test_interval_with_phase_is_aligned_to_the_epoch() -> None:
    spec = IntervalSpec(3600, 900)
    assert list(islice(fire_times(spec, utc(2026, 1, 1, 0, 20)), 2)) == [
        utc(2026, 1, 1, 1, 15),
        utc(2026, 1, 1, 2, 15),
    ]
    assert next_fire_time(spec, utc(2026, 1, 1, 1, 15)) == utc(2026, 1, 1, 2, 15), "strictly after"


def test_one_time_fires_once() -> None:
    spec = OneTimeSpec(utc(2026, 5, 1))
    assert list(fire_times(spec, utc(2026, 4, 1))) == [utc(2026, 5, 1)]
    assert next_fire_time(spec, utc(2026, 5, 1)) is None


def test_start_and_end_bound_the_times() -> None:
    spec = IntervalSpec(60)
    times = list(
        fire_times(spec, utc(2026, 1, 1), start=utc(2026, 1, 1, 0, 10), end=utc(2026, 1, 1, 0, 13))
    )
    assert times == [utc(2026, 1, 1, 0, m) for m in (10, 11, 12, 13)]


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (CronSpec("61 * * * *"), "expression"),
        (CronSpec("* * *"), "expression"),
        (CronSpec("* * * * * *"), "expression"),
        (CronSpec("@sometimes"), "expression"),
        (CronSpec("* * * * *", "Mars/Olympus"), "time_zone"),
        (IntervalSpec(0.5), "interval"),
        (IntervalSpec(10, 10), "phase"),
        (IntervalSpec(10, -1), "phase"),
    ],
)
def test_invalid_specs_name_their_field(spec: object, field: str) -> None:
    with pytest.raises(SpecError) as err:
        validate(spec)  # type: ignore[arg-type]
    assert err.value.field == field


def test_jitter_is_bounded_and_the_same_on_every_replica() -> None:
    nominal = utc(2026, 1, 1)
    offsets = [jitter_offset(f"schedule-{i}", nominal, 30) for i in range(200)]
    assert all(timedelta(0) <= o < timedelta(seconds=30) for o in offsets)
    assert len(set(offsets)) > 100, "spread out"
    assert jitter_offset("schedule-1", nominal, 30) == jitter_offset("schedule-1", nominal, 30)
    assert jitter_offset("schedule-1", nominal, 0) == timedelta(0)


def test_normal_tick_fires_the_one_due_time() -> None:
    plan = plan_due(
        IntervalSpec(60), utc(2026, 1, 1, 0, 1), utc(2026, 1, 1, 0, 1, 0, 200), catchup_window_s=60
    )
    assert (plan.fire, plan.missed, plan.next_fire) == (
        utc(2026, 1, 1, 0, 1),
        0,
        utc(2026, 1, 1, 0, 2),
    )


def test_catch_up_fires_the_latest_missed_time_inside_the_window_once() -> None:
    # Down from 00:00 to 01:00:30 with a 10-minute interval: 7 times were due.
    plan = plan_due(
        IntervalSpec(600), utc(2026, 1, 1), utc(2026, 1, 1, 1, 0, 30), catchup_window_s=60
    )
    assert plan.fire == utc(2026, 1, 1, 1) and plan.missed == 6
    assert plan.next_fire == utc(2026, 1, 1, 1, 10)


def test_catch_up_outside_the_window_fires_nothing_and_counts_everything() -> None:
    plan = plan_due(IntervalSpec(600), utc(2026, 1, 1), utc(2026, 1, 1, 1, 5), catchup_window_s=60)
    assert plan.fire is None and plan.missed == 7


def test_catch_up_across_a_dst_gap_counts_each_wall_time_once() -> None:
    spec = CronSpec("30 * * * *", "America/New_York")
    plan = plan_due(spec, utc(2026, 3, 8, 5), utc(2026, 3, 8, 9), catchup_window_s=3600)
    fired = plan.fire
    assert fired is not None and fired.astimezone(NY).minute == 30
    assert plan.missed + 1 == len(
        list(
            fire_times(spec, utc(2026, 3, 8, 5) - timedelta(microseconds=1), end=utc(2026, 3, 8, 9))
        )
    )
