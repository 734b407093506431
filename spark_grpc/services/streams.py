"""WatchTask and WatchTasks: replay from the table, then live events, never a gap.

WatchTask(after = s): subscribe to live events first, then read the table for sequence > s
and send it, then send live events, dropping any with sequence <= the last sent; a live
event that skips ahead (or a resync: Redis dropped, the stream fell behind) triggers a read
of the table from the last sent sequence. So the switch from replay to live has no gap and
no duplicate, whatever the interleaving.

WatchTasks reads state changes in ``(xid, task_id, sequence)`` order, only below the oldest
transaction still open (``pg_snapshot_xmin``): a row of a transaction that commits late has
an xid below that horizon only once it is visible, so a resumed cursor never skips it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import grpc
from google.protobuf import timestamp_pb2
from sqlalchemy import text

from spark_grpc._gen.spark.v1 import task_pb2, task_service_pb2
from spark_grpc.domain.tasks import TERMINAL, TaskState
from spark_grpc.errors import (
    FieldViolation,
    InvalidArgumentError,
    ResourceExhaustedError,
    UnavailableError,
)
from spark_grpc.events.hub import EventHub, Subscription
from spark_grpc.services.deps import ServiceDeps
from spark_grpc.services.event_pages import EventPages
from spark_grpc.services.tasks import STATES_BY_NUMBER, event_to_proto, get_task_row
from spark_grpc.validation import Validator

logger = logging.getLogger(__name__)

_PAGE = 200
#: While the live channel is down, streams read the table this often.
_POLL_WITHOUT_LIVE_S = 0.5
#: The feed also re-reads this often: a row becomes deliverable when an older open
#: transaction ends, which publishes nothing.
_FEED_POLL_S = 0.25
_NIL = "00000000-0000-0000-0000-000000000000"


def _heartbeat_time() -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.GetCurrentTime()
    return ts


def _is_terminal_change(event: task_pb2.TaskEvent) -> bool:
    if not event.HasField("state_change"):
        return False
    return STATES_BY_NUMBER.get(event.state_change.to_state) in TERMINAL


def _shutdown_error(resume: str) -> UnavailableError:
    return UnavailableError(
        f"the server is shutting down; reconnect and resume with {resume}",
        reason="SERVER_SHUTTING_DOWN",
    )


async def _next_live(sub: Subscription, timeout: float) -> dict[str, Any] | None:
    """The next live message, or None on timeout or when a resync is due."""
    if sub.resync.is_set():
        return None
    try:
        async with asyncio.timeout(timeout):
            message = await sub.queue.get()
    except TimeoutError:
        return None
    return None if sub.resync.is_set() or not message else message


class TaskStreams:
    """The two streaming RPCs of TaskService."""

    def __init__(self, deps: ServiceDeps, hub: EventHub) -> None:
        self._deps = deps
        self._hub = hub
        self._pages = EventPages(_PAGE)

    async def watch_task(
        self, request: task_service_pb2.WatchTaskRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[task_service_pb2.WatchTaskResponse]:
        """Implements WatchTask."""
        v = Validator()
        task_id = v.uuid("task_id", request.task_id)
        if request.after_sequence < 0:
            v.add("after_sequence", "must not be negative")
        v.raise_if_invalid()
        assert task_id is not None
        self._check_capacity()
        heartbeat_s = self._deps.settings.stream_heartbeat_s
        sub = self._hub.subscribe(task_id)  # before the first read: nothing slips between
        try:
            async with self._deps.db.read() as session:
                await get_task_row(session, task_id)
            last = request.after_sequence
            while True:
                sub.resync.clear()
                # Replay (and every catch-up) from the table.
                while True:
                    page = await self._pages.get(task_id, last, self._read_events)
                    for response in page:
                        yield response
                        last = response.event.sequence
                        if _is_terminal_change(response.event) and await self._is_last(
                            task_id, last
                        ):
                            return
                    if len(page) < _PAGE:
                        break
                if await self._ended_at_or_before(task_id, last):
                    return  # resumed after the terminal event: nothing more will come
                # Live.
                while True:
                    if sub.closing:
                        raise _shutdown_error(f"after_sequence={last}")
                    live = self._hub.connected.is_set()
                    message = await _next_live(sub, heartbeat_s if live else _POLL_WITHOUT_LIVE_S)
                    if message is None:
                        if sub.resync.is_set() or not self._hub.connected.is_set():
                            break  # catch up from the table
                        # Idle for a heartbeat period: look at the table too, so even a
                        # live message lost in transit delays an event by one period
                        # at most, never forever.
                        if await self._read_events(task_id, last, limit=1):
                            break
                        yield task_service_pb2.WatchTaskResponse(
                            heartbeat=task_service_pb2.StreamHeartbeat(time=_heartbeat_time())
                        )
                        continue
                    sequence = int(message["sequence"])
                    if sequence <= last:
                        continue  # already sent by the replay
                    if sequence != last + 1 or "data" not in message:
                        break  # a gap, or too large to travel live: read the table
                    event = event_to_proto(task_id, _row_from_message(message))
                    yield task_service_pb2.WatchTaskResponse(event=event)
                    last = sequence
                    if _is_terminal_change(event) and await self._is_last(task_id, last):
                        return
        finally:
            self._hub.unsubscribe(sub)

    def _check_capacity(self) -> None:
        limit = self._deps.settings.max_streams_total
        if len(self._hub.subscriptions()) >= limit:
            raise ResourceExhaustedError(
                f"this server has {limit} open streams, its limit; retry shortly or on "
                "another replica",
                retry_after_s=1.0,
                reason="TOO_MANY_STREAMS",
            )

    async def _read_events(self, task_id: uuid.UUID, after: int, limit: int = _PAGE) -> list[Any]:
        async with self._deps.db.read() as session:
            return list(
                (
                    await session.execute(
                        text(
                            "SELECT sequence, event_time, kind, data FROM task_events "
                            "WHERE task_id = :id AND sequence > :after "
                            "ORDER BY sequence LIMIT :n"
                        ),
                        {"id": task_id, "after": after, "n": limit},
                    )
                ).all()
            )

    async def _ended_at_or_before(self, task_id: uuid.UUID, sequence: int) -> bool:
        """True when the task is terminal and its newest event is at or before sequence."""
        async with self._deps.db.read() as conn:
            row = (
                await conn.execute(
                    text("SELECT state, last_sequence FROM tasks WHERE id = :id"), {"id": task_id}
                )
            ).one_or_none()
        return row is None or (TaskState(row.state) in TERMINAL and row.last_sequence <= sequence)

    async def _is_last(self, task_id: uuid.UUID, sequence: int) -> bool:
        """True when sequence is the task's newest event (so a terminal one is current)."""
        async with self._deps.db.read() as session:
            last = (
                await session.execute(
                    text("SELECT last_sequence FROM tasks WHERE id = :id"), {"id": task_id}
                )
            ).scalar_one_or_none()
        return last is None or last == sequence

    async def watch_tasks(
        self, request: task_service_pb2.WatchTasksRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[task_service_pb2.WatchTasksResponse]:
        """Implements WatchTasks."""
        flt = request.filter
        v = Validator()
        workflow_id = v.uuid("filter.workflow_id", flt.workflow_id, required=False)
        schedule_id = v.uuid("filter.schedule_id", flt.schedule_id, required=False)
        for i, state in enumerate(flt.states):
            v.enum(f"filter.states[{i}]", state, STATES_BY_NUMBER, required=True)
        v.raise_if_invalid()
        filters = {
            "workflow_id": flt.workflow_id,
            "schedule_id": flt.schedule_id,
            "states": sorted(set(flt.states)),
        }
        states = [STATES_BY_NUMBER[s].value for s in flt.states]
        position = self._deps.tokens.decode("feed", filters, request.cursor, field="cursor")
        self._check_capacity()
        sub = self._hub.subscribe(None)
        try:
            if position is None:
                position = [await self._feed_horizon(), _NIL, 0]
            elif not _valid_feed_position(position):
                raise InvalidArgumentError(
                    "invalid cursor", violations=[FieldViolation("cursor", "malformed")]
                )
            heartbeat_s = self._deps.settings.stream_heartbeat_s
            idle = 0.0
            while True:
                if sub.closing:
                    cursor = self._deps.tokens.encode("feed", filters, position)
                    raise _shutdown_error(f"cursor={cursor}")
                sub.resync.clear()
                rows = await self._read_feed(position, workflow_id, schedule_id, states)
                for row in rows:
                    position = [int(row.xid), str(row.task_id), row.sequence]
                    yield task_service_pb2.WatchTasksResponse(
                        change=task_service_pb2.TaskChange(
                            event=event_to_proto(row.task_id, row),
                            workflow_id=str(row.workflow_id),
                            schedule_id=str(row.schedule_id or ""),
                        ),
                        cursor=self._deps.tokens.encode("feed", filters, position),
                    )
                if len(rows) == _PAGE:
                    continue
                if rows:
                    idle = 0.0
                # Wait for a commit notice (or the poll period), then read again.
                await _next_live(sub, _FEED_POLL_S)
                while not sub.queue.empty():
                    sub.queue.get_nowait()
                idle += _FEED_POLL_S
                if idle >= heartbeat_s:
                    idle = 0.0
                    yield task_service_pb2.WatchTasksResponse(
                        heartbeat=task_service_pb2.StreamHeartbeat(time=_heartbeat_time()),
                        cursor=self._deps.tokens.encode("feed", filters, position),
                    )
        finally:
            self._hub.unsubscribe(sub)

    async def _feed_horizon(self) -> int:
        async with self._deps.db.read() as session:
            return int(
                (
                    await session.execute(
                        text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
                    )
                ).scalar_one()
            )

    async def _read_feed(
        self,
        position: list[Any],
        workflow_id: uuid.UUID | None,
        schedule_id: uuid.UUID | None,
        states: list[str],
    ) -> list[Any]:
        where = [
            "e.kind = 'state_change'",
            "(e.xid, e.task_id, e.sequence) > "
            "(CAST(CAST(:xid AS text) AS xid8), CAST(:task AS uuid), :seq)",
            "e.xid < pg_snapshot_xmin(pg_current_snapshot())",
        ]
        params: dict[str, Any] = {
            "xid": str(position[0]),
            "task": position[1],
            "seq": position[2],
            "n": _PAGE,
        }
        if workflow_id is not None:
            where.append("t.workflow_id = :workflow_id")
            params["workflow_id"] = workflow_id
        if schedule_id is not None:
            where.append("t.schedule_id = :schedule_id")
            params["schedule_id"] = schedule_id
        if states:
            where.append("e.data->>'to' = ANY(:states)")
            params["states"] = states
        async with self._deps.db.read() as session:
            return list(
                (
                    await session.execute(
                        text(
                            "SELECT e.xid::text AS xid, e.task_id, e.sequence, e.event_time, "
                            "e.kind, e.data, t.workflow_id, t.schedule_id "
                            "FROM task_events e JOIN tasks t ON t.id = e.task_id "
                            f"WHERE {' AND '.join(where)} "
                            "ORDER BY e.xid, e.task_id, e.sequence LIMIT :n"
                        ),
                        params,
                    )
                ).all()
            )


def _valid_feed_position(position: list[Any]) -> bool:
    if len(position) != 3 or not isinstance(position[0], int) or not isinstance(position[2], int):
        return False
    try:
        uuid.UUID(str(position[1]))
    except ValueError:
        return False
    return True


def _row_from_message(message: dict[str, Any]) -> Any:
    return SimpleNamespace(
        sequence=int(message["sequence"]),
        event_time=datetime.fromisoformat(message["event_time"]).astimezone(UTC),
        kind=message["kind"],
        data=message["data"],
    )
