"""One Redis subscription per server process, fanned out in-process to open streams.

Each stream gets a bounded queue. A stream that cannot keep up (its queue is full) is
marked for resync instead of growing memory or slowing the others: it catches up from the
table. When the subscription drops (Redis restart), every stream is marked for resync as
soon as it is back, so no stream waits for an event published while nobody listened.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from spark_grpc.events.publisher import CHANNEL

logger = logging.getLogger(__name__)

QUEUE_SIZE = 256


@dataclass(eq=False)
class Subscription:
    """One stream's view of the live events."""

    task_id: uuid.UUID | None  # None: every task (the WatchTasks feed)
    queue: asyncio.Queue[dict[str, Any]] = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))
    #: Set when live events may have been missed; the stream re-reads the table.
    resync: asyncio.Event = field(default_factory=asyncio.Event)
    closing: bool = False

    def offer(self, message: dict[str, Any]) -> None:
        """Queues a live message; a full queue turns into a resync (bounded memory)."""
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.resync.set()

    def wake(self, *, closing: bool = False) -> None:
        """Asks the stream to re-read the table (or to close) as soon as it can."""
        self.closing = self.closing or closing
        self.resync.set()
        # An empty message wakes a stream waiting on its queue; a full queue is being
        # drained, and the stream checks the flag after each message.
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait({})


class EventHub:
    """The process's subscription and its subscribers."""

    def __init__(self, redis_url: str) -> None:
        self._redis_url = redis_url
        self._by_task: dict[uuid.UUID, set[Subscription]] = {}
        self._feed: set[Subscription] = set()
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        self.closing = False

    def start(self) -> None:
        """Starts listening (in the running loop)."""
        self._task = asyncio.create_task(self._listen(), name="event-hub")

    async def stop(self) -> None:
        """Stops listening and tells every stream to close (server shutdown)."""
        self.closing = True
        for sub in self.subscriptions():
            sub.wake(closing=True)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def subscriptions(self) -> list[Subscription]:
        """Every open subscription (for tests and metrics)."""
        subs = list(self._feed)
        for group in self._by_task.values():
            subs.extend(group)
        return subs

    def subscribe(self, task_id: uuid.UUID | None) -> Subscription:
        """A subscription to one task's events, or (None) to every task's."""
        sub = Subscription(task_id)
        if task_id is None:
            self._feed.add(sub)
        else:
            self._by_task.setdefault(task_id, set()).add(sub)
        if self.closing:
            sub.wake(closing=True)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Forgets a subscription (always call it, in a finally)."""
        if sub.task_id is None:
            self._feed.discard(sub)
            return
        group = self._by_task.get(sub.task_id)
        if group is not None:
            group.discard(sub)
            if not group:
                del self._by_task[sub.task_id]

    def _dispatch(self, message: dict[str, Any]) -> None:
        try:
            task_id = uuid.UUID(message["task_id"])
        except (KeyError, ValueError):
            return
        for sub in self._by_task.get(task_id, ()):
            sub.offer(message)
        if message.get("kind") == "state_change":
            for sub in self._feed:
                sub.offer(message)

    def _resync_all(self) -> None:
        for sub in self.subscriptions():
            sub.wake()

    async def _listen(self) -> None:
        while True:
            client = aioredis.Redis.from_url(self._redis_url, socket_connect_timeout=2)
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    async for raw in pubsub.listen():
                        if raw.get("type") == "subscribe":
                            # Only now does Redis deliver to us: anything published
                            # before is in the table, so every stream re-reads it.
                            self.connected.set()
                            self._resync_all()
                            continue
                        if raw.get("type") != "message":
                            continue
                        if not self._by_task and not self._feed:
                            continue  # no stream open: nobody to decode it for
                        try:
                            message = json.loads(raw["data"])
                        except ValueError:
                            continue
                        self._dispatch(message)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                if self.connected.is_set():
                    logger.warning(
                        "live events lost (%s); streams read the table", type(err).__name__
                    )
                self.connected.clear()
                self._resync_all()
                await asyncio.sleep(0.5)
            finally:
                with contextlib.suppress(Exception):
                    await client.aclose()
