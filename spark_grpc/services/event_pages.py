"""Full pages of task event logs, shared by every stream that replays them.

A task's events get sequences 1, 2, 3 … under its row lock, in commit order, and are never
changed once written. So a page of ``size`` events read after sequence ``s`` is final as
soon as it is full: every WatchTask replaying that task gets the very same messages. A
hundred dashboards opening one finished task read its log from Postgres once and convert
it to protobuf once. Pages that are not full yet (the task still runs) are never kept.

Memory is bounded by bytes (least recently used pages go first); concurrent readers of one
page wait for a single read.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from spark_grpc._gen.spark.v1 import task_service_pb2
from spark_grpc.services.tasks import event_to_proto

Page = list[task_service_pb2.WatchTaskResponse]


class EventPages:
    """An LRU of full replay pages, keyed by (task, sequence the page starts after)."""

    def __init__(self, size: int, max_bytes: int = 32 * 1024 * 1024) -> None:
        self.size = size
        self._max_bytes = max_bytes
        self._bytes = 0
        self._pages: OrderedDict[tuple[uuid.UUID, int], tuple[Page, int]] = OrderedDict()
        self._reads: dict[tuple[uuid.UUID, int], asyncio.Future[Page]] = {}

    async def get(
        self,
        task_id: uuid.UUID,
        after: int,
        read: Callable[[uuid.UUID, int], Awaitable[list[Any]]],
    ) -> Page:
        """The events after ``after`` (up to a page), from memory when the page is full
        and was read before; ``read(task_id, after)`` fetches the rows from the table otherwise."""
        key = (task_id, after)
        kept = self._pages.get(key)
        if kept is not None:
            self._pages.move_to_end(key)
            return kept[0]
        pending = self._reads.get(key)
        if pending is not None:
            # If the shared read failed, our own read below raises its own error.
            with contextlib.suppress(Exception):
                return await asyncio.shield(pending)
        future: asyncio.Future[Page] = asyncio.get_running_loop().create_future()
        self._reads[key] = future
        try:
            page = [
                task_service_pb2.WatchTaskResponse(event=event_to_proto(task_id, row))
                for row in await read(task_id, after)
            ]
        except BaseException as err:
            future.set_exception(err if isinstance(err, Exception) else RuntimeError("cancelled"))
            future.exception()  # retrieved: nobody has to wait on it
            raise
        finally:
            self._reads.pop(key, None)
        future.set_result(page)
        if len(page) == self.size:
            self._keep(key, page)
        return page

    def _keep(self, key: tuple[uuid.UUID, int], page: Page) -> None:
        nbytes = sum(m.ByteSize() for m in page)
        if nbytes > self._max_bytes // 8:
            return  # a page of big output chunks: not worth the room
        self._pages[key] = (page, nbytes)
        self._bytes += nbytes
        while self._bytes > self._max_bytes:
            _, (_, dropped) = self._pages.popitem(last=False)
            self._bytes -= dropped
