"""One long-lived asyncio loop per worker process, in a thread, running up to N attempts.

RQ runs jobs synchronously and (for ``async def`` jobs) on a new event loop per job, which
breaks pooled clients. Instead each worker process keeps one loop in a thread with its
Postgres pool, HTTP client and cancel subscription. A job hands the claim to that loop,
which then runs the attempt in the background in one of the process's slots; RQ's thread
takes the next job only while a slot is free (see ``SlotWorker``). The lease in Postgres,
not the RQ job, is what makes a claimed attempt survive the process: a killed process's
attempts are retried by the sweeper once their leases expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import redis.asyncio as aioredis

from spark_grpc import defaults, loops
from spark_grpc.config import Settings
from spark_grpc.crypto import SecretBox
from spark_grpc.db.session import Database, create_engine
from spark_grpc.events.publisher import EventPublisher
from spark_grpc.tasks.queue import QUEUE_NAME
from spark_grpc.tracing import current_carrier

logger = logging.getLogger(__name__)

#: Presence keys of live workers (ListWorkers), refreshed every interval, expiring after TTL.
PRESENCE_PREFIX = "spark:worker:"
PRESENCE_INTERVAL_S = 5.0
PRESENCE_TTL_S = 15

T = TypeVar("T")


@dataclass
class WorkerRuntime:
    """What a worker process shares across its jobs."""

    settings: Settings
    name: str
    db: Database
    http: httpx.AsyncClient
    box: SecretBox
    loop: asyncio.AbstractEventLoop
    #: Source calls in flight, by task id, so a cancel message can stop them.
    running: dict[uuid.UUID, asyncio.Task[Any]] = field(default_factory=dict)
    #: The attempts running in the background (one per slot taken).
    attempts: set[asyncio.Task[None]] = field(default_factory=set)
    #: Free slots; RQ's thread waits on it before it takes a job from Redis.
    slots: threading.Condition = field(default_factory=threading.Condition)
    free_slots: int = 1
    #: What the presence heartbeat reports (ListWorkers).
    succeeded: int = 0
    failed: int = 0
    started_at: float = field(default_factory=time.time)
    _thread: threading.Thread | None = None
    _listener: asyncio.Task[None] | None = None
    _presence: asyncio.Task[None] | None = None

    @classmethod
    def start(cls, settings: Settings, name: str) -> WorkerRuntime:
        """Starts the loop thread and opens the shared clients on it."""
        loop = loops.new_event_loop(settings.event_loop)
        thread = threading.Thread(target=loop.run_forever, name="spark-worker-loop", daemon=True)
        thread.start()

        async def build() -> WorkerRuntime:
            runtime = cls(
                settings=settings,
                name=name,
                db=Database(
                    create_engine(settings, settings.database_url),
                    EventPublisher(settings.redis_url),
                ),
                http=httpx.AsyncClient(
                    limits=httpx.Limits(max_connections=20),
                    event_hooks={"request": [_send_trace_context]},
                ),
                box=SecretBox(settings.encryption_keys),
                loop=loop,
                free_slots=settings.worker_slots,
            )
            runtime._listener = asyncio.create_task(runtime._listen_for_cancels())
            runtime._presence = asyncio.create_task(runtime._announce_presence())
            return runtime

        runtime = asyncio.run_coroutine_threadsafe(build(), loop).result()
        runtime._thread = thread
        return runtime

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Runs coro on the loop and waits for it (from the RQ job's thread)."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except BaseException:
            # RQ's job timeout (an exception raised in this thread) or a shutdown:
            # stop the coroutine too, so it does not outlive its job.
            future.cancel()
            raise

    def wait_for_slot(self, timeout: float) -> bool:
        """Waits until a slot is free (RQ's thread, before it takes a job). Blocking."""
        with self.slots:
            return self.slots.wait_for(lambda: self.free_slots > 0, timeout)

    def take_slot(self) -> None:
        """Takes a free slot for a job about to claim its task (waits if none is free)."""
        with self.slots:
            self.slots.wait_for(lambda: self.free_slots > 0)
            self.free_slots -= 1

    def release_slot(self) -> None:
        """Gives a slot back: its attempt ended, or its job claimed nothing."""
        with self.slots:
            self.free_slots += 1
            self.slots.notify()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Runs a claimed attempt in the background on the loop; its slot (taken by the
        job) is given back when it ends, however it ends."""
        attempt = asyncio.ensure_future(coro)
        self.attempts.add(attempt)

        def done(task: asyncio.Task[None]) -> None:
            self.attempts.discard(task)
            self.release_slot()
            if not task.cancelled() and task.exception() is not None:
                logger.error("an attempt crashed", exc_info=task.exception())

        attempt.add_done_callback(done)

    def stop(self) -> None:
        """Lets running attempts finish (up to worker_drain_s), closes the clients and
        stops the loop thread."""

        async def close() -> None:
            if self.attempts:
                logger.info("waiting for %d running attempt(s) to finish", len(self.attempts))
                _, left = await asyncio.wait(
                    set(self.attempts), timeout=self.settings.worker_drain_s
                )
                for attempt in left:  # their leases expire; the sweeper retries them
                    attempt.cancel()
                if left:
                    await asyncio.wait(left, timeout=5)
            for task in (self._listener, self._presence):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            with contextlib.suppress(Exception):
                client = aioredis.Redis.from_url(self.settings.redis_url, socket_connect_timeout=1)
                await client.delete(PRESENCE_PREFIX + self.name)  # drop out of ListWorkers now
                await client.aclose()
            await self.http.aclose()
            await self.db.close()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close(), self.loop).result(
                self.settings.worker_drain_s + 15
            )
        self.loop.call_soon_threadsafe(self.loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    async def _announce_presence(self) -> None:
        """A heartbeat in Redis that expires on its own: a killed worker drops out of
        ListWorkers within PRESENCE_TTL_S (RQ's own registry keeps it for minutes)."""
        client = aioredis.Redis.from_url(self.settings.redis_url, socket_connect_timeout=2)
        try:
            while True:
                payload = {
                    "name": self.name,
                    "host": socket.gethostname(),
                    "pid": os.getpid(),
                    "queues": [QUEUE_NAME],
                    "current_task_id": next((str(t) for t in self.running), ""),
                    "running_task_ids": [str(t) for t in self.running],
                    "slots": self.settings.worker_slots,
                    "succeeded": self.succeeded,
                    "failed": self.failed,
                    "start_time": self.started_at,
                    "heartbeat_time": time.time(),
                }
                with contextlib.suppress(aioredis.RedisError, OSError):
                    await client.set(
                        PRESENCE_PREFIX + self.name, json.dumps(payload), ex=PRESENCE_TTL_S
                    )
                await asyncio.sleep(PRESENCE_INTERVAL_S)
        finally:
            with contextlib.suppress(Exception):
                await client.aclose()

    async def _listen_for_cancels(self) -> None:
        """Stops a running source call as soon as CancelTask announces it.

        The heartbeat notices a cancel too (its conditional update finds the task no longer
        RUNNING), so a lost message only delays the stop to the next heartbeat.
        """
        while True:
            client = aioredis.Redis.from_url(self.settings.redis_url, socket_connect_timeout=2)
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(defaults.CANCEL_CHANNEL)
                    async for message in pubsub.listen():
                        if message.get("type") != "message":
                            continue
                        with contextlib.suppress(ValueError):
                            task_id = uuid.UUID(message["data"].decode())
                            call = self.running.get(task_id)
                            if call is not None:
                                logger.info("task %s cancelled: stopping its source call", task_id)
                                call.cancel()
            except asyncio.CancelledError:
                raise
            except Exception as err:  # Redis down: retry; heartbeats still catch cancels
                logger.warning("cancel subscription lost (%s); retrying", type(err).__name__)
                await asyncio.sleep(1)
            finally:
                with contextlib.suppress(Exception):
                    await client.aclose()


async def _send_trace_context(request: httpx.Request) -> None:
    """Carries the attempt's trace into the source call (W3C traceparent)."""
    request.headers.update(current_carrier())


_current: WorkerRuntime | None = None


def set_current(runtime: WorkerRuntime | None) -> None:
    """Installs the process's runtime (called once by the worker process entry point)."""
    global _current  # noqa: PLW0603 - one runtime per worker process, set by its entry point
    _current = runtime


def current() -> WorkerRuntime | None:
    """The process's runtime, or None in a forked job horse (which builds its own)."""
    return _current
