"""The scheduler: ``spark-grpc scheduler`` (any number of replicas).

Each tick claims due schedules with ``FOR UPDATE SKIP LOCKED``, applies the catch-up and
overlap policies, writes the tasks and the new ``next_fire_time`` in the same transaction,
commits, and only then enqueues the tasks. Replicas never fire one schedule twice for the
same time (the row is locked, and ``next_fire_time`` moves on in the same commit), and a
scheduler killed mid-claim loses nothing (its transaction rolls back; another replica, or
its restart, claims the row again).

Between ticks it sleeps until the earliest ``next_fire_at``, woken early when a schedule
changes (a message on Redis) — no polling of Postgres while nothing is due. Each scheduler
keeps a presence key in Redis (``spark:scheduler:<host>.<pid>``, refreshed every 5 s,
expiring after 15 s) with its latest tick, which GetSystemStatus reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import redis.asyncio as aioredis
from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import JSONB

from spark_grpc import defaults, loops
from spark_grpc.config import Settings
from spark_grpc.db.session import Database, create_engine
from spark_grpc.domain import schedules as maths
from spark_grpc.errors import DatabaseUnavailableError
from spark_grpc.events.publisher import EventPublisher
from spark_grpc.presence import announce_presence
from spark_grpc.schedules.firing import (
    Overlap,
    WorkflowOfRow,
    fire,
    new_scheduled_task,
    spec_from_json,
)
from spark_grpc.tasks import store
from spark_grpc.tasks.queue import TaskQueue, enqueue_after_commit

logger = logging.getLogger(__name__)

#: Redis channel on which the service says "a schedule changed: look again".
WAKE_CHANNEL = "spark:schedules"
#: Presence keys of live schedulers (see spark_grpc.presence), read by GetSystemStatus.
PRESENCE_PREFIX = "spark:scheduler:"
_BATCH = 100
#: The longest sleep: a lost wake-up message delays a changed schedule by at most this.
MAX_SLEEP_S = 30.0
#: While a BUFFER_ONE run waits for its predecessor, look again this often.
BUFFER_POLL_S = 1.0

_SCHEDULE_WITH_WORKFLOW = (
    "SELECT s.*, w.retry_policy AS wf_retry_policy, w.timeout_s AS wf_timeout_s, "
    "EXISTS (SELECT 1 FROM tasks t WHERE t.schedule_id = s.id "
    "AND t.state IN ('PENDING', 'QUEUED', 'RUNNING')) AS busy "
    "FROM schedules s JOIN workflows w ON w.id = s.workflow_id "
)


@dataclass
class TickResult:
    """What one tick did; ``lateness_s`` is fire delay past nominal + jitter, per fire."""

    fired: list[tuple[uuid.UUID, float]] = field(default_factory=list)
    cancelled: list[uuid.UUID] = field(default_factory=list)
    lateness_s: list[float] = field(default_factory=list)
    schedules: int = 0


def next_times(row: Any, after: datetime) -> tuple[datetime | None, datetime | None]:
    """The next nominal fire time after ``after``, and when it actually fires (jitter)."""
    nominal = maths.next_fire_time(
        spec_from_json(row.spec), after, start=row.start_time, end=row.end_time
    )
    if nominal is None:
        return None, None
    return nominal, nominal + maths.jitter_offset(str(row.id), nominal, row.jitter_s)


async def tick(db: Database, now: datetime | None = None) -> TickResult:
    """Fires every due schedule (and every buffered run whose predecessor ended).

    The common case is set-based: one claim query, one insert of every new task, one
    update of every claimed schedule, whatever their number; only a busy schedule whose
    policy is BUFFER_ONE or CANCEL_OTHER takes the per-row path.
    """
    result = TickResult()
    async with db.connection() as session:
        now = now or datetime.now(UTC)
        rows = (
            await session.execute(
                text(
                    _SCHEDULE_WITH_WORKFLOW + "WHERE s.state = 'ACTIVE' AND s.next_fire_at <= :now "
                    "ORDER BY s.next_fire_at LIMIT :n FOR UPDATE OF s SKIP LOCKED"
                ),
                {"now": now, "n": _BATCH},
            )
        ).all()
        if rows:
            await _fire_due(session, list(rows), now, result)
        buffered = (
            await session.execute(
                text(
                    _SCHEDULE_WITH_WORKFLOW + "WHERE s.state = 'ACTIVE' AND "
                    "s.buffered_fire_time IS NOT NULL "
                    "ORDER BY s.buffered_fire_time LIMIT :n FOR UPDATE OF s SKIP LOCKED"
                ),
                {"n": _BATCH},
            )
        ).all()
        for row in buffered:
            outcome = await fire(
                session, row, WorkflowOfRow(row), row.buffered_fire_time, Overlap.SKIP
            )
            if not outcome.skipped:
                await session.execute(
                    text(
                        "UPDATE schedules SET buffered_fire_time = NULL, "
                        "fired_count = fired_count + 1, update_time = clock_timestamp() "
                        "WHERE id = :id"
                    ),
                    {"id": row.id},
                )
                result.fired += [(t.id, t.timeout_s) for t in outcome.tasks]
        result.schedules = len(rows)
    return result


async def _fire_due(session: Any, rows: list[Any], now: datetime, result: TickResult) -> None:
    new_tasks: list[store.NewTask] = []
    updates: list[dict[str, Any]] = []
    for row in rows:
        plan = maths.plan_due(
            spec_from_json(row.spec),
            row.next_fire_time,
            now,
            catchup_window_s=row.catchup_window_s,
            start=row.start_time,
            end=row.end_time,
        )
        fired = skipped = 0
        fired_at = None
        if plan.fire is not None:
            policy = Overlap(row.overlap_policy)
            if row.busy and policy in (Overlap.BUFFER_ONE, Overlap.CANCEL_OTHER):
                outcome = await fire(session, row, WorkflowOfRow(row), plan.fire, policy)
                result.fired += [(t.id, t.timeout_s) for t in outcome.tasks]
                result.cancelled += outcome.cancelled
                fired, skipped = len(outcome.tasks), int(outcome.skipped)
            elif row.busy and policy == Overlap.SKIP:
                skipped = 1
            else:
                new_tasks.append(new_scheduled_task(row, WorkflowOfRow(row), plan.fire))
                fired = 1
            if fired:
                fired_at = plan.fire
                due_at = plan.fire + maths.jitter_offset(str(row.id), plan.fire, row.jitter_s)
                result.lateness_s.append(max(0.0, (now - due_at).total_seconds()))
        nominal, actual = next_times(row, now)
        updates.append(
            {
                "id": str(row.id),
                "nominal": nominal.isoformat() if nominal else None,
                "actual": actual.isoformat() if actual else None,
                "fired_at": fired_at.isoformat() if fired_at else None,
                "missed": plan.missed,
                "skipped": skipped,
                "fired": fired,
            }
        )
        if plan.missed:
            logger.warning("schedule %s: %d fire time(s) missed", row.id, plan.missed)
    if new_tasks:
        written = await store.insert_tasks(session, new_tasks)
        result.fired += [(r.id, r.timeout_s) for r, _ in written]
    await session.execute(
        text(
            "UPDATE schedules s SET next_fire_time = u.nominal, next_fire_at = u.actual, "
            "last_fire_time = COALESCE(u.fired_at, s.last_fire_time), "
            "missed_count = s.missed_count + u.missed, "
            "overlap_skipped_count = s.overlap_skipped_count + u.skipped, "
            "fired_count = s.fired_count + u.fired, "
            "state = CASE WHEN u.nominal IS NULL THEN 'COMPLETED' ELSE s.state END, "
            "update_time = clock_timestamp() "
            "FROM jsonb_to_recordset(:updates) AS u(id uuid, nominal timestamptz, "
            "actual timestamptz, fired_at timestamptz, missed int, skipped int, fired int) "
            "WHERE s.id = u.id"
        ).bindparams(bindparam("updates", type_=JSONB)),
        {"updates": updates},
    )


async def earliest_due(db: Database) -> tuple[datetime | None, bool]:
    """The earliest next_fire_at of an active schedule, and whether a run is buffered."""
    async with db.connection() as session:
        row = (
            await session.execute(
                text(
                    "SELECT (SELECT min(next_fire_at) FROM schedules WHERE state = 'ACTIVE') "
                    "AS due, "
                    "EXISTS (SELECT 1 FROM schedules WHERE buffered_fire_time IS NOT NULL "
                    "AND state = 'ACTIVE') AS buffered"
                )
            )
        ).one()
    return row.due, bool(row.buffered)


class Scheduler:
    """The loop of one scheduler process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database(
            create_engine(settings, settings.database_url), EventPublisher(settings.redis_url)
        )
        self.queue = TaskQueue(settings.redis_url)
        self.redis = aioredis.Redis.from_url(settings.redis_url, socket_connect_timeout=2)
        self._wake = asyncio.Event()
        self.lateness_s: list[float] = []
        #: What the presence heartbeat reports.
        self.name = f"{socket.gethostname()}.{os.getpid()}"
        self.started_at = time.time()
        self.last_tick_time: float | None = None
        self.last_tick_error = ""
        self.fired_count = 0

    def presence(self) -> dict[str, object]:
        """This scheduler as GetSystemStatus shows it."""
        return {
            "name": self.name,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "start_time": self.started_at,
            "last_tick_time": self.last_tick_time,
            "last_tick_error": self.last_tick_error,
            "fired": self.fired_count,
        }

    async def run(self, stop: asyncio.Event) -> None:
        """Ticks until stop is set."""
        listener = asyncio.create_task(self._listen())
        presence = asyncio.create_task(
            announce_presence(self.settings.redis_url, PRESENCE_PREFIX + self.name, self.presence)
        )
        try:
            while not stop.is_set():
                sleep_s = await self._tick_once()
                self._wake.clear()
                waits = [
                    asyncio.ensure_future(stop.wait()),
                    asyncio.ensure_future(self._wake.wait()),
                ]
                await asyncio.wait(waits, timeout=sleep_s, return_when=asyncio.FIRST_COMPLETED)
                for w in waits:
                    w.cancel()
        finally:
            for task in (listener, presence):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self.redis.aclose()
            self.queue.close()
            await self.db.close()

    async def _tick_once(self) -> float:
        try:
            result = await tick(self.db)
            if result.fired:
                await enqueue_after_commit(self.db, self.queue, result.fired)
            for task_id in result.cancelled:
                with contextlib.suppress(aioredis.RedisError, OSError):
                    await self.redis.publish(defaults.CANCEL_CHANNEL, str(task_id))
            if result.lateness_s:
                self.lateness_s += result.lateness_s
                logger.info(
                    "fired %d task(s) for %d schedule(s); max lateness %.3f s",
                    len(result.fired),
                    result.schedules,
                    max(result.lateness_s),
                )
            self.fired_count += len(result.fired)
            if result.schedules == _BATCH:
                self._ticked("")
                return 0.0  # more are due right now
            due, buffered = await earliest_due(self.db)
        except DatabaseUnavailableError as err:
            logger.warning("scheduler tick skipped: %s", err)
            self._ticked(str(err))
            return 1.0
        self._ticked("")
        sleep_s = MAX_SLEEP_S
        if due is not None:
            sleep_s = min(sleep_s, max(0.0, (due - datetime.now(UTC)).total_seconds()))
        if buffered:
            sleep_s = min(sleep_s, BUFFER_POLL_S)
        return sleep_s

    def _ticked(self, error: str) -> None:
        self.last_tick_time = time.time()
        self.last_tick_error = error

    async def _listen(self) -> None:
        while True:
            try:
                async with self.redis.pubsub() as pubsub:
                    await pubsub.subscribe(WAKE_CHANNEL)
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            self._wake.set()
            except asyncio.CancelledError:
                raise
            except Exception:  # Redis down: the bounded sleep still finds due schedules
                await asyncio.sleep(1)


async def announce_change(redis: aioredis.Redis) -> None:
    """Wakes every scheduler: a schedule changed (best effort)."""
    with contextlib.suppress(aioredis.RedisError, OSError):
        await redis.publish(WAKE_CHANNEL, "changed")


def run_scheduler(settings: Settings) -> None:
    """The ``spark-grpc scheduler`` process, until SIGTERM/SIGINT."""
    import signal

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        logger.info("scheduler started")
        await Scheduler(settings).run(stop)
        logger.info("scheduler stopped")

    loops.run(main(), settings.event_loop)


__all__ = ["Scheduler", "announce_change", "run_scheduler", "tick", "timedelta"]
